"""Compare two embedding stores (ours or VisCy's) cell by cell against a reproducibility contract.

``compare_stores(prediction, reference, contract)`` runs the steps, one module each: :mod:`.sources` reads
the two sides (store paths lazily, or AnnData objects), :mod:`.align` matches their rows on
``(fov_name, track_id, t, id)``, :mod:`.metrics` measures ``X`` and every ``obsm`` array both stores have
against the :class:`Contract` (VisCy's GPU reproducibility contract by default), and :mod:`.report` collects
a :class:`VerifyReport` and renders it as text (``format_report``) or JSON. No Qt, no torch.
"""

from napari_dynaclr.verify.align import KEY_COLUMNS, REQUIRED_KEYS, RowsResult, align_rows
from napari_dynaclr.verify.metrics import HIST_EDGES, REDUCTION_PREFIXES, ArrayResult, Contract, is_reduction
from napari_dynaclr.verify.report import (
    OBS_COLUMNS,
    SCHEMA,
    SCHEMA_VERSION,
    VerifyReport,
    compare_stores,
    find_cell,
    format_report,
    map_cell_values,
)

__all__ = [
    "Contract", "VerifyReport", "ArrayResult", "RowsResult", "compare_stores", "align_rows", "format_report",
    "map_cell_values", "find_cell", "is_reduction", "HIST_EDGES", "KEY_COLUMNS", "REQUIRED_KEYS", "OBS_COLUMNS",
    "REDUCTION_PREFIXES", "SCHEMA", "SCHEMA_VERSION",
]
