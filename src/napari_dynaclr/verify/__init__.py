"""Compare two embedding stores (ours or VisCy's) cell by cell against a reproducibility contract.

``compare_stores(prediction, reference, contract)`` runs the steps, one module each: :mod:`.sources` reads
the two sides (store paths lazily, or AnnData objects), :mod:`.align` matches their rows on
``(fov_name, track_id, t, id)``, :mod:`.metrics` measures ``X`` and every ``obsm`` array both stores have
against the :class:`Contract` (VisCy's GPU reproducibility contract by default), and :mod:`.report` collects
a :class:`VerifyReport` and renders it as text (``format_report``) or JSON. No Qt, no torch.
"""

import importlib

#: each public name and the module that defines it (imported on first use: the Verify panel opens with the
#: contract alone, before pandas, zarr and the store readers are imported)
_WHERE = {
    "Contract": "contract",
    "KEY_COLUMNS": "align", "REQUIRED_KEYS": "align", "RowsResult": "align", "align_rows": "align",
    "HIST_EDGES": "metrics", "REDUCTION_PREFIXES": "metrics", "ArrayResult": "metrics", "is_reduction": "metrics",
    "OBS_COLUMNS": "report", "SCHEMA": "report", "SCHEMA_VERSION": "report", "VerifyReport": "report",
    "compare_stores": "report", "find_cell": "report", "format_report": "report", "map_cell_values": "report",
}


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


__all__ = [
    "Contract", "VerifyReport", "ArrayResult", "RowsResult", "compare_stores", "align_rows", "format_report",
    "map_cell_values", "find_cell", "is_reduction", "HIST_EDGES", "KEY_COLUMNS", "REQUIRED_KEYS", "OBS_COLUMNS",
    "REDUCTION_PREFIXES", "SCHEMA", "SCHEMA_VERSION",
]
