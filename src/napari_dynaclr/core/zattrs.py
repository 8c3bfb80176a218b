"""A zarr group's attributes read straight from its metadata file (zarr v2 ``.zattrs`` or v3 ``zarr.json``):
a cheap look at what a folder is, without opening arrays."""

from __future__ import annotations

import json
from pathlib import Path


def group_attributes(path: str | Path) -> dict | None:
    """The attributes of the zarr group at *path*, or None when it is not one (or they are unreadable)."""
    path = Path(path)
    if not path.is_dir():
        return None
    for name in (".zattrs", "zarr.json"):
        f = path / name
        if f.is_file():
            try:
                attrs = json.loads(f.read_text())
            except (OSError, ValueError):
                return None
            attrs = attrs.get("attributes", attrs) if isinstance(attrs, dict) else None
            return attrs if isinstance(attrs, dict) else None
    return None


def is_embedding_store(path: str | Path) -> bool:
    """Cheap check (no array reads) that *path* looks like an AnnData zarr store."""
    attrs = group_attributes(path)
    return attrs is not None and attrs.get("encoding-type") == "anndata"
