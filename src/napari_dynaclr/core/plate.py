"""HCS OME-Zarr plates (iohub): FOV order, channels and per-FOV normalisation statistics, as VisCy reads them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from napari_dynaclr.errors import PlateError, shorten


@dataclasses.dataclass
class FOV:
    """One field of view: ``name`` is ``"row/col/fov"`` without leading slash."""

    name: str
    position: object  # iohub Position
    shape: tuple[int, int, int, int, int]  # T, C, Z, Y, X
    dtype: object

    @property
    def image(self):
        return self.position["0"]

    @property
    def normalization(self) -> dict | None:
        return self.position.zattrs.get("normalization")

    @property
    def scale(self) -> list[float]:
        """TCZYX scale of the full-resolution array (1.0 where unknown)."""
        try:
            return [float(v) for v in self.position.scale]
        except Exception:
            return [1.0] * 5


class Plate:
    """A read-only HCS plate with FOVs in VisCy's order (rows, columns, FOVs sorted as strings).

    ``include_wells`` (e.g. ``["A/1"]``) and ``exclude_fovs`` (e.g. ``["A/1/0"]``) are VisCy's
    ``fit_include_wells`` / ``fit_exclude_fovs``, which VisCy also applies when predicting.
    """

    def __init__(
        self,
        path: str | Path,
        include_wells: Sequence[str] | None = None,
        exclude_fovs: Sequence[str] | None = None,
    ):
        self.path = Path(path)
        self._plate = open_plate(self.path)
        self.channel_names: list[str] = list(self._plate.channel_names)
        wells = [name for name, _ in self._plate.wells()]
        if include_wells is not None:
            unknown = [w for w in include_wells if w not in wells]
            if unknown:
                raise PlateError(
                    f"well(s) {shorten(unknown)} not in plate {self.path} (wells: {shorten(wells, 8)})"
                )
        self.fovs: list[FOV] = []
        all_fovs = []
        for _, well in self._plate.wells():
            for _, pos in well.positions():
                name = pos.zgroup.name.strip("/")
                all_fovs.append(name)
                if not is_selected(name, include_wells, exclude_fovs):
                    continue
                if "0" not in pos.array_keys():
                    raise PlateError(f"FOV {name} of plate {self.path} has no full-resolution array '0'")
                arr = pos["0"]
                if len(arr.shape) != 5:
                    raise PlateError(f"FOV {name}: image array '0' has shape {arr.shape}, expected TCZYX")
                self.fovs.append(FOV(name, pos, tuple(int(s) for s in arr.shape), arr.dtype))
        if exclude_fovs is not None:
            unknown = [f for f in exclude_fovs if f not in all_fovs]
            if unknown:
                raise PlateError(f"FOV(s) {shorten(unknown)} to exclude are not in plate {self.path}")
        if not self.fovs:
            raise PlateError(f"plate {self.path} has no FOVs left to predict (after well/FOV selection)")

    def fov(self, name: str) -> FOV:
        for f in self.fovs:
            if f.name == name:
                return f
        raise PlateError(f"FOV {name!r} not in plate {self.path} (FOVs: {shorten([f.name for f in self.fovs])})")

    def channel_indices(self, names: Sequence[str]) -> list[int]:
        missing = [n for n in names if n not in self.channel_names]
        if missing:
            raise PlateError(
                f"channel(s) {shorten([repr(m) for m in missing])} not in plate {self.path}; available channels: "
                f"{', '.join(self.channel_names)}"
            )
        return [self.channel_names.index(n) for n in names]

    def close(self):
        try:
            self._plate.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def is_hcs_plate(path: str | Path) -> bool:
    """Cheap check (no array reads) that *path* is an OME-Zarr HCS plate (NGFF 0.4 or 0.5 metadata)."""
    from napari_dynaclr.core.zattrs import group_attributes

    attrs = group_attributes(path)
    return attrs is not None and ("plate" in attrs or "plate" in (attrs.get("ome") or {}))


def open_plate(path: Path):
    """Open *path* read-only as an iohub HCS plate, with a clear error for anything else."""
    from iohub.ngff import open_ome_zarr

    path = Path(path)
    if not path.exists():
        raise PlateError(f"plate not found: {path}")
    if not path.is_dir():
        raise PlateError(f"plate {path} is a file, expected an OME-Zarr directory")
    try:
        node = open_ome_zarr(path, mode="r")
    except Exception as exc:
        raise PlateError(f"{path} is not an OME-Zarr store ({type(exc).__name__}: {_first_line(exc)})") from exc
    kind = type(node).__name__
    if kind != "Plate":
        try:
            node.close()
        except Exception:
            pass
        what = {"Position": "a single FOV (Position)", "TiledPosition": "a single FOV"}.get(kind, kind)
        raise PlateError(f"{path} is {what}, not an HCS plate (rows/columns/FOVs)")
    return node


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "no detail"


def is_selected(fov_name: str, include_wells: Sequence[str] | None = None,
                exclude_fovs: Sequence[str] | None = None) -> bool:
    """Whether VisCy's ``fit_include_wells`` / ``fit_exclude_fovs`` keep FOV ``"row/col/fov"``."""
    well = fov_name.rsplit("/", 1)[0]
    return (include_wells is None or well in include_wells) and (exclude_fovs is None or fov_name not in exclude_fovs)


def plate_info(path: str | Path, include_wells: Sequence[str] | None = None,
               exclude_fovs: Sequence[str] | None = None) -> dict:
    """Channels, wells, FOV names (all, and those the well/FOV selection keeps) and the first FOV's
    shape/dtype (for widgets and summaries)."""
    with Plate(path) as plate:
        first = plate.fovs[0]
        return {
            "channels": plate.channel_names,
            "fovs": [f.name for f in plate.fovs],
            "selected": [f.name for f in plate.fovs if is_selected(f.name, include_wells, exclude_fovs)],
            "wells": sorted({f.name.rsplit("/", 1)[0] for f in plate.fovs}),
            "shape": first.shape,
            "dtype": str(first.dtype),
        }
