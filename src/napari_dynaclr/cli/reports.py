"""The commands' ``--json`` reports: checked before any work, written through the safe write path
(:func:`napari_dynaclr.core.output.write_json`): atomic, never into an input (nor inside one, nor inside any zarr
store), a report this tool wrote replaced as a rerun's, any other file only with ``--overwrite``."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

OVERWRITE_HELP = "replace an existing --json file that napari-dynaclr did not write (a report it wrote is replaced)"


def check_report(path: Path, inputs: Mapping[str, object], overwrite: bool = False) -> None:
    """Refuse the report path *path* now, before the command reads anything (see the module)."""
    from napari_dynaclr.core.output import check_output_path

    check_output_path(path, overwrite, inputs, kind="json")


def write_report(path: Path, payload: Mapping, made_by: str, inputs: Mapping[str, object], overwrite: bool = False,
                 said: str = "wrote {path}") -> None:
    """Write *payload* as the JSON report *path* and say so on stderr."""
    from napari_dynaclr.core.output import write_json

    write_json(path, payload, made_by, overwrite, inputs)
    print(said.format(path=path), file=sys.stderr)
