"""Reading an embedding store in a thread beside a GUI thread: how long the main thread is kept waiting for
the GIL, ``LazyStore`` + the explorer's cell table (what the open's worker does) against ``anndata.read_zarr``.

The main thread ticks every millisecond while a thread reads the store; the longest gap between ticks is the
longest the GUI thread would have been blocked. Prints both and their ratio (best of *repeats*).

    .venv/bin/python benchmarks/bench_store_open.py --cells 1000000

``--dock`` (under a display) measures the GUI side instead, as the walk-through of ``bench_heartbeat.py`` does
it: the DynaCLR dock with a small synthetic plate in its plate and tracks fields opens a large synthetic store
(``--cells``) twice (the second open refills or replaces the first one's layers, with its table in memory),
then recolours by track_id and t, selects with a lasso and switches FOV twice; the longest GUI-thread block of
each (``--where``: where it was).

    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python benchmarks/bench_store_open.py --dock [--where]
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import pandas as pd

from scratch import scratch_dir


def longest_wait(job) -> float:
    """The longest gap between the main thread's 1 ms ticks while *job* runs in a thread (seconds)."""
    th = threading.Thread(target=job)
    longest, last = 0.0, time.perf_counter()
    th.start()
    while th.is_alive():
        time.sleep(0.001)
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    th.join()
    return longest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=400_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dock", action="store_true", help="open the store in the dock (GUI-thread blocks)")
    p.add_argument("--where", action="store_true", help="with --dock: where the GUI thread was while blocked")
    p.add_argument("--fov-cells", type=int, default=100_000)
    p.add_argument("--frames", type=int, default=100)
    args = p.parse_args(argv)
    if args.dock:
        return dock_open(args)

    from napari_dynaclr._napari import cellmodel
    from napari_dynaclr.core.store import LazyStore, build_anndata, read_store, write_store

    rng = np.random.default_rng(2)
    n = args.cells
    obs = pd.DataFrame({
        "fov_name": rng.choice(["B/2/0", "A/1/0", "A/1/10"], n),
        "track_id": rng.integers(0, 50, n), "t": rng.integers(0, 20, n), "id": np.arange(n),
        "parent_track_id": -1, "parent_id": -1, "y": rng.integers(0, 256, n), "x": rng.integers(0, 256, n),
    })
    adata = build_anndata(obs, rng.normal(size=(n, 4)).astype(np.float32), rng.normal(size=(n, 2)).astype(np.float32))
    adata.obsm["X_umap"] = rng.normal(size=(n, 2)).astype(np.float32)
    path = write_store(adata, scratch_dir("dynaclr-open-") / "big.zarr")
    del adata

    lazy = min(longest_wait(lambda: cellmodel.FrameIndex(cellmodel.cell_table(LazyStore(path).obs)))
               for _ in range(args.repeats))
    full = min(longest_wait(lambda: read_store(path)) for _ in range(args.repeats))
    print(f"{n} cells: longest GUI-thread wait, LazyStore + cell table {lazy * 1000:.0f} ms, "
          f"anndata.read_zarr {full * 1000:.0f} ms (ratio {full / lazy:.1f})")
    return 0


def dock_open(args) -> int:
    """The ``--dock`` mode (see the module)."""
    import os

    from bench_heartbeat import laptop_viewer, large_store
    from napari_dynaclr._napari.widgets._jobs import is_running
    from napari_dynaclr.core.synthetic import SyntheticSpec, make_plate

    work = scratch_dir("dynaclr-open-dock-")
    demo = make_plate(work / "demo", SyntheticSpec(fovs_per_well=2, timepoints=10, cells_per_fov=15))
    store = large_store(work, args.cells, args.fov_cells, args.frames)
    viewer, walk = laptop_viewer(args.where)
    _, main = viewer.window.add_plugin_dock_widget("napari-dynaclr", "DynaCLR")
    walk.until(lambda: main.explore.scatter.ready)
    s = main.session
    main.plate.value, main.tracks.value = demo["plate"], demo["tracks"]
    walk.until(lambda: main.checks.plate_worker is None and s.table is not None)  # (the plate's cells, a preview)
    print(f"load average {os.getloadavg()[0]:.1f} at the start; {args.cells:,} cells")
    for i in range(2):
        main.store.value = store
        walk.measure(f"open a store {i + 1}", main.open_btn.native.click,
                     lambda: main.opener.worker is not None and not is_running(main.opener.worker)
                     and s.store_path == store and main.open_btn.enabled, lambda: f"{len(s.table):,} cells")
    for column in ("track_id", "t"):
        walk.measure(f"recolour ({column})", lambda c=column: s.color_by(c), lambda c=column: s.color_column == c)
    xy = main.explore.xy()
    lo, hi = np.nanmin(xy, axis=0), np.nanmax(xy, axis=0)
    c, r = lo + (hi - lo) * 0.5, (hi - lo) * 0.25  # a lasso as in the walk-through: the switches show a selection
    ang = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    polygon = c + r * np.column_stack([np.cos(ang), np.sin(ang)])
    walk.measure("lasso", lambda: main.explore.select_polygon(polygon, mode="replace"), lambda: True,
                 lambda: f"{len(s.selected):,} selected")
    fovs = s.fov_names()
    for i in range(2):
        target = fovs[(fovs.index(s.fov_name) + 1) % len(fovs)]
        walk.measure(f"FOV switch {i + 1}", lambda f=target: s.show_fov(f), lambda f=target: s.fov_name == f)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    viewer.close()
    walk.app.processEvents()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
