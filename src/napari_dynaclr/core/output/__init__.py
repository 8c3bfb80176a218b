"""The one safe write path: every file and folder napari-dynaclr writes goes through this package.

Users point this tool at their only copy of a plate. Whatever it writes — an embedding store, a cell-index parquet,
a JSON or CSV report, the dock's saves and exports, the demo's files, the napari sample data:

- **Inputs are sacred**: an output that is, contains or lies inside anything the run reads (resolved as the run
  resolves it: a collection's plates, a cell index's ``store_path``) is refused whatever ``overwrite`` says; so is
  one inside any zarr store or plate, a symbolic link, and a mount point.
- **Only our own kind is replaced**: without ``overwrite`` nothing is replaced but a file this tool wrote — a JSON
  report with its mark, or a file its folder's manifest records, unchanged (``evaluate mmd``'s CSV and JSON,
  ``evaluate pseudotime``'s JSON: :mod:`.manifest`); with it only an embedding store or an empty folder (a store),
  a parquet file (a cell index), a text file (a report). The demo and the sample data replace only the entries
  their manifest records, unchanged (:class:`OwnedFolder`).
- **One writer per output**: an exclusive ``flock`` beside the output, held from the checks to the end of the run;
  a second run fails at once naming the first (pid, host, start time); a dead holder's lock is taken over, whoever
  owns its file (:mod:`.lock`).
- **Atomic replacement**: the new output is written beside the target, flushed to disk and swapped in with one
  ``renameat2(RENAME_EXCHANGE)`` — the path holds the complete old output or the complete new one, on a full disk
  or past a file-size limit too (one line, the old output intact) — with SIGINT/SIGTERM held back during the swap.
- **Leftovers are cleaned** whenever a run on that output starts, refused runs included; an old output that cannot
  be deleted is named in a warning.

Writers outside this package are the functions marked :func:`temporary_writer`, which write only into a temporary
path handed out here (``tests/test_safe_writes_architecture.py`` fails on any other file write under ``src/``).
"""

from napari_dynaclr.core.output.checks import (
    KINDS,
    check_existing,
    check_output_path,
    check_replaceable,
    check_target,
    describe_folder,
    is_own_output,
    is_own_report,
)
from napari_dynaclr.core.output.files import (
    ScratchFolder,
    make_folder,
    report_json,
    temporary_writer,
    write_entries,
    write_json,
    write_text,
)
from napari_dynaclr.core.output.guard import OutputGuard, clean_after_kill, is_issued, storage_error, write_atomically
from napari_dynaclr.core.output.manifest import content_hash, record_file, recorded
from napari_dynaclr.core.output.owned import OwnedFolder

__all__ = [
    "KINDS", "OutputGuard", "OwnedFolder", "ScratchFolder", "check_existing", "check_output_path", "check_replaceable",
    "check_target", "clean_after_kill", "content_hash", "describe_folder", "is_issued", "is_own_output",
    "is_own_report", "make_folder", "record_file", "recorded", "report_json", "storage_error", "temporary_writer",
    "write_atomically", "write_entries", "write_json", "write_text",
]
