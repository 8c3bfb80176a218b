"""Evaluation at GUI scale: 1e5 cells x 768 features (synthetic, seeded), no Qt.

Times what the napari gallery / classifier / smoothness panels call, each against its target:

- neighbour index build (exact, scikit-learn) and a k=16 query of one cell (target < 100 ms),
- classifier retrain on a few hundred labelled cells + predicting every cell (target < 1 s),
- whole-store temporal smoothness, cosine (target < 5 s),
- representative sample (<= 64 rows) of a 20,000-cell selection, and the centroid order of that selection.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_evaluate.py [--cells 100000] [--labels 300] [--approximate]

``--approximate`` also builds the pynndescent index (the path above 1e5 cells); its first build includes numba's
compilation (minutes), so it is off by default.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from scratch import scratch_dir


def synthetic(n_cells: int, n_features: int = 768, timepoints: int = 50, seed: int = 0):
    """Tracks of *timepoints* frames drifting around a few states, in stored order fov → track → t."""
    rng = np.random.default_rng(seed)
    n_tracks = n_cells // timepoints
    states = rng.standard_normal((4, n_features)).astype(np.float32)
    track_state = rng.integers(0, 4, n_tracks)
    X = np.empty((n_tracks * timepoints, n_features), np.float32)
    for k in range(n_tracks):
        walk = np.cumsum(rng.standard_normal((timepoints, n_features), dtype=np.float32) * 0.05, axis=0)
        X[k * timepoints:(k + 1) * timepoints] = states[track_state[k]] + walk + rng.standard_normal(
            (timepoints, n_features), dtype=np.float32) * 0.7
    track = np.repeat(np.arange(n_tracks), timepoints)
    obs = pd.DataFrame({"fov_name": pd.Categorical([f"A/1/{k // 100}" for k in track]),
                        "track_id": track % 100 + 1, "t": np.tile(np.arange(timepoints), n_tracks)})
    labels = np.array(["G1", "S", "M", "infected"])[np.repeat(track_state, timepoints)]
    return X, obs, labels


def timed(fn, repeat: int = 1):
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def report(name: str, seconds: float, target: float | None = None) -> None:
    verdict = "" if target is None else ("  ok" if seconds < target else "  OVER TARGET")
    if target is None:
        tgt = ""
    else:
        tgt = f"  (target < {target * 1000:.0f} ms)" if target < 1 else f"  (target < {target:g} s)"
    print(f"{name:<58} {seconds * 1000:9.1f} ms{tgt}{verdict}")


def gallery(X: np.ndarray, selection: np.ndarray) -> float:
    """What the Cells tab does for a selection: pick <= 64 representative rows, cut their patches as the model
    receives them (predict.gallery.model_inputs on the demo plate: the rows are mapped onto its cells) and tint
    them (explore.composite). Best of 3, after one warm-up."""

    from napari_dynaclr._napari.sample_data import DEMO_SPEC
    from napari_dynaclr._napari.tiles import composite
    from napari_dynaclr.core.config import PredictConfig, default_normalizations
    from napari_dynaclr.core.synthetic import make_plate
    from napari_dynaclr.evaluate.neighbours import representative_sample
    from napari_dynaclr.predict.gallery import model_inputs
    from napari_dynaclr.predict.plan import plan_prediction

    folder = scratch_dir("bench-gallery-")
    paths = make_plate(folder, DEMO_SPEC)
    channels = ["Phase3D", "RFP"]
    cfg = PredictConfig.plain(paths["plate"], paths["tracks"], channels, (0, 1), 64).with_overrides(
        normalizations=default_normalizations(channels), batch_size=32)
    plan = plan_prediction(cfg)
    cells = plan.cells[["fov_name", "track_id", "t"]].reset_index(drop=True)
    plan.close()

    def run():
        rows = representative_sample(X, selection)
        index, patches = model_inputs(cfg, cells.iloc[rows % len(cells)].drop_duplicates())
        return composite(patches, [(1, 1, 1), (1, 0, 1)])

    run()
    t, _ = timed(run, repeat=3)
    return t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=100_000)
    p.add_argument("--labels", type=int, default=300, help="labelled cells for the classifier")
    p.add_argument("--approximate", action="store_true", help="also time the pynndescent index")
    args = p.parse_args(argv)

    from threadpoolctl import threadpool_info

    from napari_dynaclr.evaluate.classifier import predict_classes, track_groups, train_classifier
    from napari_dynaclr.evaluate.neighbours import NeighbourIndex, order_by_centroid, representative_sample
    from napari_dynaclr.evaluate.smoothness import compute_smoothness

    t0 = time.perf_counter()
    X, obs, truth = synthetic(args.cells)
    threads = max((i.get("num_threads", 1) for i in threadpool_info()), default=1)
    print(f"data: {X.shape[0]:,} cells x {X.shape[1]} features float32 ({time.perf_counter() - t0:.1f} s to make); "
          f"BLAS/OpenMP threads: {threads}")

    build, index = timed(lambda: NeighbourIndex(X, metric="cosine"))
    report(f"neighbour index build (exact={index.exact})", build)
    rows = np.random.default_rng(1).integers(0, len(X), 20)
    q, _ = timed(lambda: [index.query(int(r), k=16) for r in rows])
    report("neighbour query, k=16, one cell (mean of 20)", q / len(rows), 0.1)

    rng = np.random.default_rng(2)
    labels = np.full(len(X), None, dtype=object)
    picked = rng.choice(len(X), args.labels, replace=False)
    labels[picked] = truth[picked]
    groups = track_groups(obs)

    def retrain_and_predict(split):
        res = train_classifier(X, labels, groups=groups, split=split)
        return res, predict_classes(res.model, X)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the lbfgs note (4 classes)
        retrain_and_predict("cell")  # warm-up: scikit-learn's first imports
        t_cell, (res, _) = timed(lambda: retrain_and_predict("cell"), repeat=3)
        t_track, _ = timed(lambda: retrain_and_predict("track"), repeat=3)
        t_two, _ = timed(lambda: (train_classifier(X, np.where(np.isin(labels, ["G1", "S"]), labels, None)),), 3)
    report(f"classifier retrain ({args.labels} labels, {res.solver}) + predict all, cell split", t_cell, 1.0)
    report("classifier retrain + predict all, track split", t_track, 1.0)
    report("classifier retrain only, 2 classes (liblinear)", t_two)
    t_pred, _ = timed(lambda: predict_classes(res.model, X), repeat=3)
    report("  of which: predict all cells", t_pred)

    t_s, sm = timed(lambda: compute_smoothness(X, obs, metric="cosine"))
    report(f"whole-store smoothness, cosine ({len(sm.adjacent):,} adjacent pairs)", t_s, 5.0)
    t_se, _ = timed(lambda: compute_smoothness(X, obs, metric="euclidean"))
    report("whole-store smoothness, euclidean", t_se, 5.0)
    from sklearn.preprocessing import StandardScaler

    from napari_dynaclr.evaluate.smoothness import _peaks

    t_sc, _ = timed(lambda: StandardScaler().fit_transform(X))
    report("  of which: StandardScaler (VisCy's z-score, float32)", t_sc)
    t_pk, _ = timed(lambda: _peaks(sm.adjacent, sm.random))
    report("  of which: the two KDE peaks (1,000-point grid each)", t_pk)

    selection = np.sort(rng.choice(len(X), 20_000, replace=False))
    t_rep, sample = timed(lambda: representative_sample(X, selection))
    report(f"representative sample of a 20,000-cell selection ({len(sample)} rows)", t_rep)
    t_ord, _ = timed(lambda: order_by_centroid(X, selection))
    report("centroid order of the 20,000-cell selection", t_ord)

    t_gal = gallery(X, selection)
    report("gallery of 64 tiles: sample of the 20,000-cell selection + cutting and normalising the patches "
           "(the demo plate, the run's reader) + composite", t_gal, 0.5)

    if args.approximate:
        t_ab, approx = timed(lambda: NeighbourIndex(X, metric="cosine", exact=False))
        report("approximate index build (pynndescent, incl. numba compile)", t_ab)
        t_aq, _ = timed(lambda: [approx.query(int(r), k=16) for r in rows])
        report("approximate query, k=16, one cell (mean of 20)", t_aq / len(rows), 0.1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
