"""Generate the benchmark plate of issue 5 (or a larger one).

Default (4,000 cells): HCS NGFF 0.4, wells A/1 and B/1 with FOVs 0 and 1, one channel ``Phase3D``,
TCZYX (20, 1, 1, 512, 512) float32 chunked (1, 1, 1, 512, 512), 50 tracks x 20 timepoints per FOV, every
centroid at least 80 px from the border, ``fov_statistics`` / ``dataset_statistics`` (mean, std, ...)
in each FOV's ``normalization`` attributes (sampled on a 32-px grid like ``viscy preprocess``).

``--cells N`` keeps the per-FOV density (1,000 cells per FOV) and adds FOVs (two per well, wells
A/1, B/1, C/1, ... then A/2, ...), so a larger plate exercises the same per-plane access pattern.

``--kind 3d`` writes the plate shaped like VisCy's reference DynaCLR predict.yml instead: two channels
``Phase3D`` and ``RFP``, TCZYX (20, 2, 30, 512, 512) float32 chunked one z-slice per chunk (1, 1, 1, 512, 512),
cells as 3-D blobs (Phase3D dark, RFP bright on a Poisson-like background), the same tracks and density;
the matching config (:data:`BENCH_3D`) takes z_range [0, 30], 160-px patches, ``NormalizeSampled`` on
Phase3D (fov_statistics) and ``ScaleIntensityRangePercentilesd`` (50 – 99) on RFP, and a 3-D stem
(in_stack_depth 30, kernel (5, 4, 4)).

    python benchmarks/make_bench_plate.py /tmp/bench --cells 4000
    python benchmarks/make_bench_plate.py /tmp/bench3d --cells 4000 --kind 3d
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
Z3D = 30
#: the 3-D plate's prediction settings (VisCy's reference predict.yml shape)
BENCH_3D = {"channels": ["Phase3D", "RFP"], "z_range": (0, Z3D), "patch": 160,
            "stem": (5, 4, 4), "in_stack_depth": Z3D}


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


def _volume(rng: np.random.Generator, df: pd.DataFrame, t: int, noise: np.ndarray) -> np.ndarray:
    """(C=2, Z, H, W) float32 of timepoint *t*: Phase3D (dark 3-D blobs on 1000) and RFP (bright blobs on
    ~100); the noise comes from a bank of precomputed planes (shifted), which keeps generation fast."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    blobs = np.zeros((H, W), np.float32)
    for row in df[df.t == t].itertuples():
        y0, x0 = int(row.y), int(row.x)
        sl = (slice(y0 - 12, y0 + 12), slice(x0 - 12, x0 + 12))
        blobs[sl] += np.exp(-((yy[sl] - row.y) ** 2 + (xx[sl] - row.x) ** 2) / 8.0**2)
    zprof = np.exp(-((np.arange(Z3D, dtype=np.float32) - Z3D / 2) / (Z3D / 4)) ** 2)
    vol = np.empty((2, Z3D, H, W), np.float32)
    nb = len(noise)
    for z in range(Z3D):
        k = rng.integers(nb)
        shift = tuple(int(v) for v in rng.integers(0, H, 2))
        n = np.roll(noise[k], shift, axis=(0, 1))
        vol[0, z] = np.round(1000 + 2.0 * n - 30 * zprof[z] * blobs)
        vol[1, z] = np.round(100 + 3.0 * np.abs(n) + 400 * zprof[z] * blobs)
    return vol


def make_bench_plate(out_dir: str | Path, cells: int = 4000, timepoints: int = T, seed: int = 0,
                     kind: str = "2d") -> dict:
    """Write ``plate.zarr`` and ``tracks/`` under *out_dir*; returns their paths and the cell count."""
    from iohub.ngff import open_ome_zarr

    if kind == "3d":
        return _make_3d(out_dir, cells, timepoints, seed)

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


def _make_3d(out_dir, cells: int, timepoints: int, seed: int) -> dict:
    from iohub.ngff import open_ome_zarr

    channels = BENCH_3D["channels"]
    per_fov = TRACKS_PER_FOV * timepoints
    n_fovs = max(1, math.ceil(cells / per_fov))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plate_path, tracks_path = out / "plate.zarr", out / "tracks"
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (8, H, W)).astype(np.float32)
    grid = (slice(None), slice(None), slice(None, None, 32), slice(None, None, 32))  # (C, Z, Y, X) per t
    samples, positions = [], []
    with open_ome_zarr(plate_path, layout="hcs", mode="w-", channel_names=channels, version="0.4") as plate:
        for name in fov_names(n_fovs):
            row, col, f = name.split("/")
            df = _tracks(rng, timepoints)
            pos = plate.create_position(row, col, f)
            arr = pos.create_zeros("0", (timepoints, 2, Z3D, H, W), np.float32, chunks=(1, 1, 1, H, W))
            sample = []
            for t in range(timepoints):
                vol = _volume(rng, df, t, noise)
                arr[t] = vol
                sample.append(vol[grid])
            sample = np.stack(sample)  # (T, C, Z, y, x)
            d = tracks_path / name
            d.mkdir(parents=True, exist_ok=True)
            df.to_csv(d / "tracks.csv", index=False)
            samples.append(sample)
            positions.append((pos, sample))
        dataset = {c: _stats(np.concatenate([s[:, i].ravel() for s in samples])) for i, c in enumerate(channels)}
        for pos, sample in positions:
            pos.zattrs["normalization"] = {
                c: {"dataset_statistics": dataset[c], "fov_statistics": _stats(sample[:, i])}
                for i, c in enumerate(channels)
            }
    return {"plate": plate_path, "tracks": tracks_path, "cells": n_fovs * per_fov, "fovs": n_fovs}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--cells", type=int, default=4000, help="number of cells (rounded up to whole FOVs of 1,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kind", choices=("2d", "3d"), default="2d", help="3d: VisCy's reference predict.yml shape")
    args = p.parse_args(argv)
    info = make_bench_plate(args.out_dir, args.cells, seed=args.seed, kind=args.kind)
    print(f"wrote {info['plate']} ({info['fovs']} FOVs, {info['cells']} cells) and {info['tracks']}")


if __name__ == "__main__":
    main()
