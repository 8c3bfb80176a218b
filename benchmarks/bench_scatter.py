"""Interactive-speed benchmark of the embedding view (run under a display, e.g. ``xvfb-run -a``).

    xvfb-run -a .venv/bin/python benchmarks/bench_scatter.py [--cells 1000000] [--fov-cells 100000]

Builds a synthetic cell table (FOVs × frames × cells, a UMAP-like 2-D embedding), opens it in a napari
viewer with the DynaCLR embedding view, and prints the median time of
  1. recolouring every scatter point (plus the shown FOV's Points/Tracks layers) by another column,
  2. a lasso selection over the scatter (hit test + selection column + layer highlight + overlay),
  3. one time step of the viewer with --fov-cells cells in the shown FOV (napari slicing + our overlay),
each with and without the forced redraw, and the ratio to the targets (200 ms, 200 ms, 50 ms).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

TARGETS_MS = {"recolour": 200.0, "lasso": 200.0, "time step": 50.0}


def synthetic_table(n_cells: int, fov_cells: int, frames: int, seed: int = 0) -> pd.DataFrame:
    from napari_dynaclr._napari import explore

    rng = np.random.default_rng(seed)
    n_fovs = max(1, n_cells // fov_cells)
    per_frame = fov_cells // frames
    n = n_fovs * frames * per_frame
    fov = np.repeat([f"A/{i // 10 + 1}/{i % 10}" for i in range(n_fovs)], frames * per_frame)
    t = np.tile(np.repeat(np.arange(frames), per_frame), n_fovs)
    track = np.tile(np.tile(np.arange(1, per_frame + 1), frames), n_fovs)
    start = rng.uniform(20, 2000, size=(n_fovs * per_frame, 2))
    walk = rng.normal(0, 1.5, size=(n, 2))
    yx = np.repeat(start, frames, axis=0).reshape(n_fovs, per_frame, frames, 2).transpose(0, 2, 1, 3).reshape(n, 2)
    yx = yx + np.cumsum(walk.reshape(n_fovs, frames, per_frame, 2), axis=1).reshape(n, 2)
    obs = pd.DataFrame({"fov_name": fov, "track_id": track, "t": t, "id": np.arange(n),
                        "parent_track_id": -1, "parent_id": -1, "y": yx[:, 0].astype(np.int64),
                        "x": yx[:, 1].astype(np.int64)})
    centers = rng.normal(0, 6, size=(12, 2))
    umap = centers[rng.integers(0, 12, n)] + rng.normal(0, 1.0, size=(n, 2))
    table = explore.cell_table(obs, {"X_umap": umap})
    table["score"] = rng.normal(size=n).astype(np.float32)
    return table


def timed(fn, app, repeat: int, draw: bool) -> float:
    times = []
    for i in range(repeat):
        t0 = time.perf_counter()
        fn(i)
        if draw:
            app.processEvents()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=1_000_000)
    ap.add_argument("--fov-cells", type=int, default=100_000)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_dynaclr._napari.session import get_session
    from napari_dynaclr._napari.widgets.embedding_view import EmbeddingView

    t0 = time.perf_counter()
    table = synthetic_table(args.cells, args.fov_cells, args.frames)
    print(f"table: {len(table):,} cells, {table['fov_name'].nunique()} FOVs × {args.frames} frames "
          f"({time.perf_counter() - t0:.1f} s to build)")
    viewer = napari.Viewer(show=True)
    view = EmbeddingView(viewer)
    viewer.window.add_dock_widget(view, name="Embedding view")
    app = QApplication.instance()
    s = get_session(viewer)
    t0 = time.perf_counter()
    s.set_table(table)
    app.processEvents()
    print(f"load: {time.perf_counter() - t0:.1f} s; shown FOV {s.fov_name} has {len(s.overlay.rows):,} cells")

    xy = view.xy()
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    rng = np.random.default_rng(1)
    cols = ["score", "track_id", "UMAP_0", "fov_name"]

    def recolour(i):
        s.color_by(cols[i % len(cols)])

    def lasso(i):
        c = lo + (hi - lo) * rng.uniform(0.3, 0.7, 2)
        ang = np.linspace(0, 2 * np.pi, 60, endpoint=False)
        r = (hi - lo) * 0.25 * (1 + 0.3 * np.sin(5 * ang))[:, None]
        view.select_polygon(c + r * np.column_stack([np.cos(ang), np.sin(ang)]), mode="replace")

    def step(i):
        viewer.dims.set_point(0, (i * 7) % args.frames)

    results = {}
    for name, fn in (("recolour", recolour), ("lasso", lasso), ("time step", step)):
        fn(0)
        app.processEvents()
        no_draw = timed(fn, app, args.repeat, draw=False)
        app.processEvents()
        with_draw = timed(fn, app, args.repeat, draw=True)
        results[name] = (no_draw, with_draw)
    own = []
    for i in range(args.repeat):
        t0 = time.perf_counter()
        s.frame_changed.emit(s.fov_name, (i * 13) % args.frames)  # our part of a step: scatter emphasis
        own.append((time.perf_counter() - t0) * 1000)
    n_sel = len(s.selected)
    print(f"lasso selects ~{n_sel:,} cells per polygon")
    print(f"{'action':<12}{'update ms':>11}{'+draw ms':>10}{'target ms':>11}{'ratio':>8}")
    for name, (a, b) in results.items():
        target = TARGETS_MS[name]
        print(f"{name:<12}{a:>11.1f}{b:>10.1f}{target:>11.0f}{b / target:>8.2f}")
    print(f"time step, DynaCLR handlers only (scatter emphasis of the frame's cells): "
          f"{statistics.median(own):.1f} ms; the rest is napari slicing the {len(s.overlay.rows):,}-cell "
          "Points and Tracks layers")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
