"""DTW pseudotime of 10^4 tracks of 50 frames (target < 60 s): onsets, a template (PCA 20 components, VisCy's
default, cropped to ±12 frames around the onset), subsequence alignment of every track, response groups,
evaluation and track timings — and VisCy's ``dynaclr.pseudotime`` on a subset when its source is available.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_pseudotime.py [--tracks 10000] [--frames 50] [--features 768]
        [--flavor pca20|raw] [--viscy-src PATH --dtaidistance PATH] [--viscy-tracks 300]

``--viscy-src``: a VisCy checkout (``applications/dynaclr/src/dynaclr/pseudotime`` under it); its package is
loaded without ``dynaclr/__init__`` (which needs the training stack). ``--dtaidistance``: a folder holding
dtaidistance 2.4.0 (``pip install --target DIR dtaidistance==2.4.0``) when it is not installed. VisCy runs in pure
Python (``use_c=False``), so it is timed on the first ``--viscy-tracks`` tracks, and napari-dynaclr on the same
subset for the ratio; the script also says whether both gave the same warping paths and costs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

DATASET = "bench"


def synthetic(n_tracks: int, frames: int, features: int, seed: int = 0):
    """Tracks in wells A/1 (never infected) and B/1 (60 % infected, onset at frames 15-34), 100 per FOV."""
    rng = np.random.default_rng(seed)
    u_inf = rng.standard_normal(features)
    u_inf /= np.linalg.norm(u_inf)
    u_bump = rng.standard_normal(features)
    u_bump /= np.linalg.norm(u_bump)
    t = np.arange(frames)
    X = np.empty((n_tracks * frames, features), np.float32)
    well = np.where(np.arange(n_tracks) < n_tracks // 2, "A/1", "B/1")
    infectable = (well == "B/1") & (rng.random(n_tracks) < 0.6)
    onset = rng.integers(15, 35, n_tracks)
    for k in range(n_tracks):
        x = rng.standard_normal((frames, features)) * 0.5 + rng.standard_normal(features) * 0.05
        if infectable[k]:
            ramp = 1 / (1 + np.exp(-(t - onset[k])))
            bump = np.exp(-0.5 * ((t - onset[k] - 1) / 1.5) ** 2)
            x += 6 * ramp[:, None] * u_inf + 4 * bump[:, None] * u_bump
        X[k * frames:(k + 1) * frames] = x
    track = np.repeat(np.arange(n_tracks), frames)
    fov = np.array([f"{well[k]}/{(k % (n_tracks // 2)) // 100}" for k in range(n_tracks)])[track]
    obs = pd.DataFrame({"fov_name": pd.Categorical(fov), "track_id": track % 100 + 1, "t": np.tile(t, n_tracks),
                        "parent_track_id": -1})
    state = np.where(infectable[track] & (obs["t"].to_numpy() >= onset[track]), "infected", "uninfected")
    annotations = pd.DataFrame({"fov_name": fov, "track_id": obs["track_id"], "t": obs["t"],
                                "infection_state": state})
    return X, obs, annotations


def config(flavor: str):
    from napari_dynaclr.evaluate.pseudotime import PseudotimeConfig

    return PseudotimeConfig.model_validate({
        "dataset_id": DATASET,
        "align_tracks": {"frame_interval_minutes": 30.0, "fov_pattern": "B/1", "min_track_timepoints": 3},
        "build_template": {"crop_window": 12, "propagate_columns": ["infection_state"],
                           "flavors": {flavor: 20 if flavor == "pca20" else None}},
    })


def load_viscy(src: Path, dtaidistance: Path | None):
    if dtaidistance is not None:
        sys.path.insert(0, str(dtaidistance))
    found = sorted(src.rglob("dynaclr/pseudotime/dtw_alignment.py"))
    if not found:
        raise SystemExit(f"no dynaclr/pseudotime under {src}")
    package = types.ModuleType("dynaclr")
    package.__path__ = [str(found[0].parent.parent)]
    sys.modules["dynaclr"] = package
    import dynaclr.pseudotime as pt
    from dynaclr.pseudotime.alignment import align_tracks

    return pt, align_tracks


def run_viscy(pt, viscy_align, X, obs, annotations, flavor: str):
    import anndata as ad

    adata = ad.AnnData(X=X, obs=obs.reset_index(drop=True).astype({"fov_name": str}))
    table = obs[["fov_name", "track_id", "t", "parent_track_id"]].astype({"fov_name": str}).reset_index(drop=True)
    table = table.merge(annotations, on=["fov_name", "track_id", "t"], how="left")
    aligned = viscy_align(table, 30.0, fov_pattern="B/1", min_track_timepoints=3)
    tmpl = pt.build_template({DATASET: adata}, {DATASET: aligned}, pca_n_components=20 if flavor == "pca20" else None,
                             crop_window=12, propagate_columns=["infection_state"], random_state=42)
    results = pt.dtw_align_tracks(adata, table, tmpl, DATASET, min_track_timepoints=3)
    pt.alignment_results_to_dataframe(results, tmpl.template_id, time_calibration=tmpl.time_calibration)
    pt.classify_response_groups(results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=10_000)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--features", type=int, default=768)
    parser.add_argument("--flavor", choices=["pca20", "raw"], default="pca20")
    parser.add_argument("--viscy-src", type=Path)
    parser.add_argument("--dtaidistance", type=Path)
    parser.add_argument("--viscy-tracks", type=int, default=300)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    from napari_dynaclr.evaluate.pseudotime import run_pseudotime

    X, obs, annotations = synthetic(args.tracks, args.frames, args.features)
    cfg = config(args.flavor)
    print(f"{args.tracks} tracks x {args.frames} frames x {args.features} features, template {args.flavor}, "
          f"crop ±12; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    t0, c0 = time.perf_counter(), time.process_time()
    result = run_pseudotime(X, obs, annotations, cfg)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    mode = result.flavors[args.flavor].modes["subsequence"]
    print(f"napari-dynaclr, all tracks: {seconds:6.1f} s (CPU {cpu:.1f} s)   ({len(result.t_perturb)} onsets, template "
          f"{len(result.flavors[args.flavor].template)} frames, {len(mode.alignments)} tracks aligned)   "
          f"(target < 60 s: {'ok' if seconds < 60 else 'OVER'})")
    if args.viscy_src is not None:
        n = args.viscy_tracks * args.frames
        half = args.tracks * args.frames // 2  # the subset takes tracks of both wells
        rows = np.r_[0:n // 2, half:half + n - n // 2]
        Xs, obs_s = X[rows], obs.iloc[rows].reset_index(drop=True)
        ann_s = annotations.iloc[rows].reset_index(drop=True)
        t0, c0 = time.perf_counter(), time.process_time()
        ours = run_pseudotime(Xs, obs_s, ann_s, cfg).flavors[args.flavor].modes["subsequence"].alignments
        t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
        pt, viscy_align = load_viscy(args.viscy_src, args.dtaidistance)
        t0, c0 = time.perf_counter(), time.process_time()
        ref = run_viscy(pt, viscy_align, Xs, obs_s, ann_s, args.flavor)
        t_viscy, c_viscy = time.perf_counter() - t0, time.process_time() - c0
        same_paths = len(ref) == len(ours) and all(np.array_equal(np.asarray(r.warping_path), o.warping_path)
                                                   for r, o in zip(ref, ours))
        worst = max(abs(r.dtw_cost - o.dtw_cost) / abs(r.dtw_cost) for r, o in zip(ref, ours))
        print(f"subset of {args.viscy_tracks} tracks: napari-dynaclr {t_ours:6.1f} s (CPU {c_ours:.1f} s), VisCy "
              f"{t_viscy:6.1f} s (CPU {c_viscy:.1f} s) -> {t_viscy / t_ours:.0f}x wall; warping paths "
              f"{'identical' if same_paths else 'DIFFERENT'}, max relative cost difference {worst:.1e}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
