"""Where a classic run's tracks come from: the tracking tables in the layouts users have.

- **a tracks folder** ``<tracks>/<row>/<col>/<fov>/*.csv`` — VisCy's layout (the first CSV, in sorted order);
  the same folder with ultrack's per-FOV parquet export (``*.parquet``) where a FOV has no CSV;
- **a folder of ultrack exports** ``<tracks>/tracks_<row>_<col>_<fov>.csv`` (or ``.parquet``) — the file name
  biahub's ultrack step gives each FOV;
- **one tracks table** (CSV or parquet) for every FOV, with a ``fov_name`` column (``A/1/0``);
- **one ultrack export** (CSV or parquet, no ``fov_name``) when the run predicts one FOV;
- **a table in memory**: :meth:`TracksTable.from_frame` (e.g. a napari Tracks layer's data with ``fov_name``).

ultrack's export (``to_tracks_layer``: ``track_id, t, [z], y, x, id, parent_track_id, parent_id``; older versions
leave out ``parent_id``/``parent_track_id``, and its parquet keeps ``id`` as the index) uses VisCy's column
names: ``id`` is taken from a parquet's index when it is not a column, and missing parent columns read as -1
(no parent) with a warning. Every table is then checked as VisCy's CSVs are
(:func:`napari_dynaclr.core.tracks.check_tracks`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from napari_dynaclr.core.inputs import check_input_file, check_input_folder, os_error
from napari_dynaclr.core.tracks import find_tracks_csv, read_csv
from napari_dynaclr.errors import TracksError

ACCEPTED = ("a tracks folder <tracks>/<row>/<col>/<fov>/*.csv (VisCy) or *.parquet (ultrack), a folder of ultrack "
            "exports tracks_<row>_<col>_<fov>.csv/.parquet, one CSV/parquet table with a fov_name column, or one "
            "ultrack export (CSV/parquet) when one FOV is predicted")
SUFFIXES = (".csv", ".parquet", ".pq")
PARENTS = ("parent_track_id", "parent_id")


def read_table(path: Path, what: str = "tracks table") -> pd.DataFrame:
    """A CSV or parquet file as a frame (a parquet's ``id`` index becomes the ``id`` column), checked as every
    input file is (:func:`~napari_dynaclr.core.inputs.check_input_file`: a FIFO would block)."""
    path = check_input_file(path, what, TracksError)
    where = f"{what} {path}"
    if path.suffix.lower() == ".csv":
        return read_csv(path, what)
    try:
        frame = pd.read_parquet(path)
    except OSError as exc:
        raise os_error(exc, path, what, TracksError) from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a bad file
        first = str(exc).strip().splitlines()[0][:150] if str(exc).strip() else type(exc).__name__
        raise TracksError(f"{where} is not a readable parquet file ({first})") from None
    if frame.index.name == "id":  # ultrack's parquet: the node id is the index
        frame = frame.reset_index(drop="id" in frame.columns)
    return frame.reset_index(drop=True)


def with_parents(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """An ultrack table without ``parent_track_id`` / ``parent_id``: those read as -1 (no parent), with a warning."""
    missing = [c for c in PARENTS if c not in frame.columns]
    if missing:
        warnings.warn(f"{where} has no {' or '.join(missing)} column (an ultrack export without lineage): read as "
                      "-1 (no parent)", stacklevel=3)
        frame = frame.assign(**{c: -1 for c in missing})
    return frame


class TracksFolder:
    """``<tracks>/<row>/<col>/<fov>/``: the first ``*.csv`` (VisCy), else the first ``*.parquet`` (ultrack)."""

    layout = "tracks folder"

    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self, fov_name: str) -> tuple[pd.DataFrame, str]:
        folder = self.path / fov_name
        if folder.is_dir() and not any(folder.glob("*.csv")):
            parquets = sorted(folder.glob("*.parquet"))
            if parquets:
                if len(parquets) > 1:
                    warnings.warn(f"FOV {fov_name}: {len(parquets)} parquet files in {folder}; using "
                                  f"{parquets[0].name}", stacklevel=3)
                where = f"tracks parquet {parquets[0]}"
                return with_parents(read_table(parquets[0], "tracks parquet"), where), where
        csv = find_tracks_csv(self.path, fov_name)
        return read_table(csv, "tracks CSV"), f"tracks CSV {csv}"


class UltrackFiles:
    """A folder of ultrack exports named as biahub names them: ``tracks_<row>_<col>_<fov>.csv`` / ``.parquet``."""

    layout = "folder of ultrack exports"

    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self, fov_name: str) -> tuple[pd.DataFrame, str]:
        stem = "tracks_" + fov_name.replace("/", "_")
        found = [self.path / f"{stem}{s}" for s in SUFFIXES if (self.path / f"{stem}{s}").exists()]
        if not found:
            raise TracksError(f"no tracks for FOV {fov_name}: {self.path} has no {stem}.csv or {stem}.parquet")
        where = f"tracks export {found[0]}"
        return with_parents(read_table(found[0], "tracks export"), where), where


class TracksTable:
    """One table of every FOV's tracks, with a ``fov_name`` column (``A/1/0``; leading/trailing ``/`` ignored);
    each FOV's rows in table order. *where*: how messages name it."""

    layout = "tracks table"

    def __init__(self, frame: pd.DataFrame, where: str = "tracks table"):
        if "fov_name" not in frame.columns:
            raise TracksError(f"{where} has no fov_name column (columns: {', '.join(map(str, frame.columns))}); "
                              f"accepted tracks: {ACCEPTED}")
        self.frame = frame
        self.where = where
        self._groups: dict | None = None

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, name: str = "tracks table") -> TracksTable:
        """A table given in memory (e.g. a napari Tracks layer's rows with their ``fov_name``), copied."""
        if not isinstance(frame, pd.DataFrame):
            raise TracksError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
        return cls(frame.reset_index(drop=True).copy(), name)

    @classmethod
    def read_file(cls, path: Path) -> TracksTable:
        return cls(read_table(path), f"tracks table {path}")

    def fov_names(self) -> list[str]:
        return sorted(self._by_fov())

    def _by_fov(self) -> dict:
        if self._groups is None:
            names = self.frame["fov_name"].astype(str).str.strip("/")
            self._groups = {str(k): v for k, v in self.frame.groupby(names.to_numpy(), sort=False).indices.items()}
        return self._groups

    def read(self, fov_name: str) -> tuple[pd.DataFrame, str]:
        rows = self._by_fov().get(str(fov_name).strip("/"))
        if rows is None:
            raise TracksError(f"{self.where} has no rows for FOV {fov_name} (FOVs: "
                              f"{', '.join(self.fov_names()[:5])}{'…' if len(self._by_fov()) > 5 else ''})")
        where = f"{self.where} (FOV {fov_name})"
        return with_parents(self.frame.iloc[rows].drop(columns=["fov_name"]), where), where


class SingleExport:
    """One ultrack export without a ``fov_name`` column: the tracks of the one FOV the run predicts."""

    layout = "ultrack export"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fov: str | None = None

    def read(self, fov_name: str) -> tuple[pd.DataFrame, str]:
        if self.fov is not None and self.fov != fov_name:
            raise TracksError(f"tracks {self.path} has no fov_name column, so it holds one FOV, but the run predicts "
                              f"{self.fov} and {fov_name}; accepted tracks: {ACCEPTED}")
        self.fov = fov_name
        where = f"tracks export {self.path}"
        return with_parents(read_table(self.path, "tracks export"), where), where


def _columns(path: Path) -> list[str]:
    if path.suffix.lower() == ".csv":
        try:
            return list(pd.read_csv(path, nrows=0).columns)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError):
            return []
    try:
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    except Exception:  # noqa: BLE001 - read_table reports a broken file properly
        return []


def open_tracks(path) -> TracksFolder | UltrackFiles | TracksTable | SingleExport:
    """The layout of the tracks at *path* (see the module); one line naming the accepted layouts otherwise."""
    path = Path(path)
    if path.is_dir() or not path.exists():
        check_input_folder(path, "tracks folder", TracksError)
        if any(p.is_dir() for p in path.iterdir()):
            return TracksFolder(path)
        if any(p.name.startswith("tracks_") and p.suffix.lower() in SUFFIXES for p in path.iterdir()):
            return UltrackFiles(path)
        raise TracksError(f"tracks folder {path} holds no tracks in a known layout; accepted: {ACCEPTED}")
    if path.suffix.lower() not in SUFFIXES:
        raise TracksError(f"tracks {path} is not a CSV or parquet file; accepted: {ACCEPTED}")
    check_input_file(path, "tracks table", TracksError)  # (before its header is read: a FIFO would block)
    if "fov_name" in _columns(path):
        return TracksTable.read_file(path)
    return SingleExport(path)
