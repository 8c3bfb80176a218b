"""The commands' ``--json`` reports: checked before any work, written through the safe write path
(:func:`napari_dynaclr.core.output.write_json`): atomic, never into an input (nor inside one, nor inside any zarr
store), a report this tool wrote replaced as a rerun's, any other file only with ``--overwrite``."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

OVERWRITE_HELP = "replace an existing --json file that napari-dynaclr did not write (a report it wrote is replaced)"
#: for outputs recorded in their folder's manifest (core.output.manifest)
OVERWRITE_RECORDED_HELP = ("replace an existing output file that napari-dynaclr did not write or that was changed "
                           "since (its own unchanged output of an earlier run is replaced without it)")


def check_report(path: Path, inputs: Mapping[str, object], overwrite: bool = False) -> None:
    """Refuse the report path *path* now, before the command reads anything (see the module)."""
    from napari_dynaclr.core.output import check_output_path

    check_output_path(path, overwrite, inputs, kind="json")


def write_report(path: Path, payload: Mapping, made_by: str, inputs: Mapping[str, object], overwrite: bool = False,
                 said: str = "wrote {path}", record: bool = False) -> None:
    """Write *payload* as the JSON report *path* and say so on stderr. *record*: recorded in its folder's manifest
    (:func:`~napari_dynaclr.core.output.write_text`): a rerun replaces it only while it is unchanged."""
    from napari_dynaclr.core.output import write_json

    write_json(path, payload, made_by, overwrite, inputs, record=record)
    print(said.format(path=path), file=sys.stderr)
