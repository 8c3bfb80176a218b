"""Generate the benchmark plate of issue 5 (or a larger one).

Default (4,000 cells): HCS NGFF 0.4, wells A/1 and B/1 with FOVs 0 and 1, one channel ``Phase3D``,
TCZYX (20, 1, 1, 512, 512) float32 chunked (1, 1, 1, 512, 512), 50 tracks x 20 timepoints per FOV, every
centroid at least 80 px from the border, ``fov_statistics`` / ``dataset_statistics`` (mean, std, ...)
in each FOV's ``normalization`` attributes (sampled on a 32-px grid like ``viscy preprocess``).

``--cells N`` keeps the per-FOV density (1,000 cells per FOV) and adds FOVs (two per well, wells
A/1, B/1, C/1, ... then A/2, ...), so a larger plate exercises the same per-plane access pattern.

    python benchmarks/make_bench_plate.py /tmp/bench --cells 4000
"""

from __future__ import annotations

import argparse
import math
import string
from pathlib import Path

import numpy as np
import pandas as pd

T, H, W = 20, 512, 512
TRACKS_PER_FOV = 50
MARGIN = 80


def _stats(v: np.ndarray) -> dict:
    v = v.astype(np.float64).ravel()
    p = np.percentile(v, [1, 5, 25, 50, 75, 95, 99])
    return {
        "min": float(v.min()), "max": float(v.max()), "mean": float(v.mean()), "std": float(v.std()),
        "median": float(p[3]), "iqr": float(p[4] - p[2]), "p1": float(p[0]), "p5": float(p[1]),
        "p95": float(p[5]), "p99": float(p[6]), "p95_p5": float(p[5] - p[1]), "p99_p1": float(p[6] - p[0]),
    }


def fov_names(n_fovs: int) -> list[str]:
    names = []
    rows = string.ascii_uppercase
    for k in range(n_fovs):
        well, f = divmod(k, 2)
        col, row = divmod(well, len(rows))
        names.append(f"{rows[row]}/{col + 1}/{f}")
    return names


def _tracks(rng: np.random.Generator, timepoints: int) -> pd.DataFrame:
    lo, hi = MARGIN + 1, H - MARGIN - 1  # strictly inside: 80 < y < 432 for a 160-px patch
    rows, node = [], 0
    for k in range(1, TRACKS_PER_FOV + 1):
        y, x = rng.uniform(lo, hi, 2)
        vy, vx = rng.normal(0, 3.0, 2)
        for t in range(timepoints):
            node += 1
            rows.append((k, t, node, -1, -1, round(float(y), 3), round(float(x), 3)))
            y, x = float(np.clip(y + vy, lo, hi)), float(np.clip(x + vx, lo, hi))
    return pd.DataFrame(rows, columns=["track_id", "t", "id", "parent_track_id", "parent_id", "y", "x"])


def _image(rng: np.random.Generator, df: pd.DataFrame, timepoints: int) -> np.ndarray:
    img = np.empty((timepoints, 1, 1, H, W), dtype=np.float32)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    bg = (1000 + 8 * np.sin(yy / 37.0) * np.cos(xx / 53.0)).astype(np.float32)
    for t in range(timepoints):
        plane = bg + rng.normal(0, 2.0, (H, W)).astype(np.float32)
        for row in df[df.t == t].itertuples():
            y0, x0 = int(row.y), int(row.x)
            sl = (slice(y0 - 12, y0 + 12), slice(x0 - 12, x0 + 12))
            r2 = ((yy[sl] - row.y) ** 2 + (xx[sl] - row.x) ** 2) / 8.0**2
            plane[sl] -= 30 * np.exp(-r2)
        img[t, 0, 0] = np.round(plane)
    return img


def make_bench_plate(out_dir: str | Path, cells: int = 4000, timepoints: int = T, seed: int = 0) -> dict:
    """Write ``plate.zarr`` and ``tracks/`` under *out_dir*; returns their paths and the cell count."""
    from iohub.ngff import open_ome_zarr

    per_fov = TRACKS_PER_FOV * timepoints
    n_fovs = max(1, math.ceil(cells / per_fov))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plate_path, tracks_path = out / "plate.zarr", out / "tracks"
    rng = np.random.default_rng(seed)
    grid = (slice(None), 0, slice(None), slice(None, None, 32), slice(None, None, 32))
    samples, positions = [], []
    with open_ome_zarr(plate_path, layout="hcs", mode="w-", channel_names=["Phase3D"], version="0.4") as plate:
        for name in fov_names(n_fovs):
            row, col, f = name.split("/")
            df = _tracks(rng, timepoints)
            img = _image(rng, df, timepoints)
            pos = plate.create_position(row, col, f)
            pos.create_image("0", img, chunks=(1, 1, 1, H, W))
            d = tracks_path / name
            d.mkdir(parents=True, exist_ok=True)
            df.to_csv(d / "tracks.csv", index=False)
            sample = img[grid]
            samples.append(sample)
            positions.append((pos, sample))
        dataset = _stats(np.concatenate([s.ravel() for s in samples]))
        for pos, sample in positions:
            pos.zattrs["normalization"] = {
                "Phase3D": {"dataset_statistics": dataset, "fov_statistics": _stats(sample)}
            }
    return {"plate": plate_path, "tracks": tracks_path, "cells": n_fovs * per_fov, "fovs": n_fovs}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--cells", type=int, default=4000, help="number of cells (rounded up to whole FOVs of 1,000)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    info = make_bench_plate(args.out_dir, args.cells, seed=args.seed)
    print(f"wrote {info['plate']} ({info['fovs']} FOVs, {info['cells']} cells) and {info['tracks']}")


if __name__ == "__main__":
    main()
