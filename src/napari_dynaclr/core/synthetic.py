"""Synthetic tracked-cell plates with signal, for the demo, the napari sample data and tests.

Each FOV holds two cell types (round "type A" and elongated "type B"), a reporter channel that switches
on mid-track in "infected" cells, and one division per FOV (ultrack lineage columns). Images are written
as an iohub HCS plate with VisCy-style ``normalization`` attributes (fov, dataset and timepoint
statistics, sampled on a 32-px grid like ``viscy preprocess``) and one tracks CSV per FOV.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from napari_dynaclr.core.output import temporary_writer

CHANNELS = ["Phase3D", "RFP"]


@dataclasses.dataclass
class SyntheticSpec:
    wells: tuple[str, ...] = ("A/1", "B/1")
    fovs_per_well: int = 2
    timepoints: int = 8
    size: tuple[int, int] = (256, 256)
    depth: int = 1
    cells_per_fov: int = 10
    seed: int = 0
    dtype: str = "float32"
    ngff_version: str = "0.4"


#: the columns of a tracking CSV (the rest of a synthetic FOV's table is its hidden truth)
TRACK_COLUMNS = ["track_id", "t", "id", "parent_track_id", "parent_id", "y", "x"]


def _stats(values: np.ndarray) -> dict:
    v = values[np.isfinite(values)].astype(np.float64)
    p = np.percentile(v, [1, 5, 25, 50, 75, 95, 99])
    return {
        "min": float(v.min()), "max": float(v.max()), "mean": float(v.mean()), "std": float(v.std()),
        "median": float(p[3]), "iqr": float(p[4] - p[2]), "p1": float(p[0]), "p5": float(p[1]),
        "p95": float(p[5]), "p99": float(p[6]), "p95_p5": float(p[5] - p[1]), "p99_p1": float(p[6] - p[0]),
    }


def _tracks_for_fov(rng: np.random.Generator, spec: SyntheticSpec, fov_seed: int) -> pd.DataFrame:
    """Tracks (ultrack columns) plus hidden per-row ``cell_type`` / ``infected`` / ``radius`` columns."""
    h, w = spec.size
    margin = 40
    rows, node = [], 0
    n_t = spec.timepoints
    for k in range(1, spec.cells_per_fov + 1):
        ctype = "A" if k % 2 else "B"
        infected_at = int(rng.integers(n_t // 3, 2 * n_t // 3 + 1)) if k % 3 == 0 else None
        y, x = rng.uniform(margin, h - margin), rng.uniform(margin, w - margin)
        vy, vx = rng.normal(0, 2.0, 2)
        angle = rng.uniform(0, np.pi)
        divides = k == 1
        t_end = n_t // 2 if divides else n_t
        for t in range(t_end):
            node += 1
            rows.append(dict(track_id=k, t=t, id=node, parent_track_id=-1, parent_id=-1, y=y, x=x,
                             cell_type=ctype, infected=int(infected_at is not None and t >= infected_at),
                             angle=angle))
            y, x = np.clip(y + vy, margin, h - margin), np.clip(x + vx, margin, w - margin)
        if divides:
            parent_node = node
            for d, sign in ((spec.cells_per_fov + 1, 1), (spec.cells_per_fov + 2, -1)):
                dy, dx = y + sign * 9.0, x - sign * 6.0
                for t in range(t_end, n_t):
                    node += 1
                    rows.append(dict(track_id=d, t=t, id=node, parent_track_id=k,
                                     parent_id=parent_node if t == t_end else node - 1,
                                     y=dy, x=dx, cell_type=ctype, infected=0, angle=angle))
                    dy, dx = np.clip(dy + sign * 1.5, margin, h - margin), np.clip(dx - sign, margin, w - margin)
    df = pd.DataFrame(rows)
    df["y"] = df["y"].round(3)
    df["x"] = df["x"].round(3)
    return df


def _render(df: pd.DataFrame, spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
    n_t, (h, w), nz = spec.timepoints, spec.size, spec.depth
    img = np.zeros((n_t, 2, nz, h, w), dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    zc = (nz - 1) / 2
    zprof = np.exp(-((np.arange(nz) - zc) ** 2) / (2 * max(nz / 4, 0.5) ** 2)).astype(np.float32)
    bg = 1000 + 8 * np.sin(yy / 37.0) * np.cos(xx / 53.0)
    for t in range(n_t):
        phase = bg.copy()
        rfp = np.full((h, w), 100.0, dtype=np.float32)
        for row in df[df.t == t].itertuples():
            dy, dx = yy - row.y, xx - row.x
            if row.cell_type == "A":
                r2 = (dy**2 + dx**2) / 11.0**2
                body = np.exp(-r2)
                ring = np.exp(-((np.sqrt(r2) - 1.1) ** 2) / 0.05)
                phase += -30 * body + 18 * ring
            else:
                ca, sa = np.cos(row.angle), np.sin(row.angle)
                u, v = ca * dy + sa * dx, -sa * dy + ca * dx
                r2 = (u / 18.0) ** 2 + (v / 8.0) ** 2
                phase += -22 * np.exp(-r2) + 6 * np.exp(-r2 * 6)
            if row.infected:
                rfp += 400 * np.exp(-(dy**2 + dx**2) / (2 * 6.0**2))
        phase += rng.normal(0, 2.0, phase.shape)
        rfp += rng.normal(0, 5.0, rfp.shape)
        img[t, 0] = np.round(phase)[None] * (0.7 + 0.3 * zprof[:, None, None])
        img[t, 1] = np.round(np.clip(rfp, 0, None))[None] * zprof[:, None, None]
    return img


def synthetic_fovs(spec: SyntheticSpec | None = None) -> Iterator[tuple[str, pd.DataFrame, np.ndarray]]:
    """``(fov_name, tracks with truth columns, TCZYX image)`` of each FOV, in plate order — what
    :func:`make_plate` writes, computed in memory (the first one costs a fraction of the plate)."""
    spec = spec or SyntheticSpec()
    rng = np.random.default_rng(spec.seed)
    for well in spec.wells:
        for f in range(spec.fovs_per_well):
            df = _tracks_for_fov(rng, spec, f)
            img = _render(df, spec, rng)
            if spec.dtype != "float32":
                img = np.clip(img, 0, np.iinfo(spec.dtype).max).astype(spec.dtype)
            yield f"{well}/{f}", df, img


def make_plate(out_dir: str | Path, spec: SyntheticSpec | None = None, owned=None) -> dict:
    """Write ``plate.zarr`` and ``tracks/<row>/<col>/<fov>/tracks.csv`` as new entries of *out_dir* (created if
    missing) through the safe write path; *owned*: the :class:`~napari_dynaclr.core.output.OwnedFolder` *out_dir*
    is, which records them.

    Returns paths and the hidden ground truth (a DataFrame with fov_name, track_id, t, cell_type, infected).
    """
    from napari_dynaclr.core.output import make_folder, write_entries

    spec = spec or SyntheticSpec()
    out = make_folder(out_dir)
    names = ("plate.zarr", "tracks")
    if owned is not None:
        truth = owned.write_entries(names, lambda staging: write_synthetic(staging, spec))
    else:
        truth = write_entries(out, names, lambda staging: write_synthetic(staging, spec))
    return {"plate": out / "plate.zarr", "tracks": out / "tracks", "truth": truth}


@temporary_writer
def write_synthetic(staging: Path, spec: SyntheticSpec) -> pd.DataFrame:
    """Write ``plate.zarr`` and ``tracks/`` of *spec* into *staging* (a temporary folder of the safe write path);
    return the hidden ground truth."""
    import logging

    from iohub.ngff import open_ome_zarr

    logging.getLogger("iohub").setLevel(logging.ERROR)  # "Cannot read first position metadata" on a new plate
    plate_path, tracks_path = staging / "plate.zarr", staging / "tracks"
    truth, per_fov = [], {}
    with open_ome_zarr(plate_path, layout="hcs", mode="w-", channel_names=CHANNELS, version=spec.ngff_version) as plate:
        for name, df, img in synthetic_fovs(spec):
            row, col, f = name.split("/")
            pos = plate.create_position(row, col, f)
            pos.create_image("0", img, chunks=(1, 1, spec.depth, *spec.size))
            per_fov[name] = (pos, img)
            d = tracks_path / name
            d.mkdir(parents=True, exist_ok=True)
            df[TRACK_COLUMNS].to_csv(d / "tracks.csv", index=False)
            gt = df[["track_id", "t", "cell_type", "infected"]].copy()
            gt.insert(0, "fov_name", name)
            truth.append(gt)
        grid = (slice(None), slice(None), slice(None, None, 32), slice(None, None, 32))
        dataset = {ch: _stats(np.concatenate([img[:, c][grid].ravel() for _, img in per_fov.values()]))
                   for c, ch in enumerate(CHANNELS)}
        for _name, (pos, img) in per_fov.items():
            pos.zattrs["normalization"] = {
                ch: {
                    "dataset_statistics": dataset[ch],
                    "fov_statistics": _stats(img[:, c][grid].ravel()),
                    "timepoint_statistics": {str(t): _stats(img[t, c][grid[1:]].ravel()) for t in range(img.shape[0])},
                }
                for c, ch in enumerate(CHANNELS)
            }
    return pd.concat(truth, ignore_index=True)
