"""The longest GUI-thread block of every action of the walk-through, through the DynaCLR dock (target: none over
200 ms on a quiet machine, none over 300 ms with two busy loops beside it). Run under a display:

    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python benchmarks/bench_heartbeat.py [--load] \
        [--cells 1000000] [--fov-cells 100000]

A 5 ms QTimer ticks on the GUI thread (``bench_scatter.Heartbeat``); the longest gap between two ticks while an
action runs, from its start until its result is shown (and 0.2 s after), is the longest time the event loop
was blocked. The actions, as a user takes them (the demo: a small plate, tracks and checkpoint built in the
plugin's work process; napari's process never imports torch):

  open the dock (Plugins > DynaCLR; until its plot's staged first paint is done) →
  load a predict.yml (the Load button) → check the checkpoint → predict the demo (the Run button) →
  neighbours of a clicked cell → gallery of a selection → classifier (two labelled classes) → verify the run's
  store against itself → open a large synthetic store (--cells) → recolour → lasso → time step → FOV switch.

``--load`` starts two busy loops (processes, one per core of a 2-core laptop) before the walk-through and ends
them after it. Prints one line per action and the machine's load average at the start and the end. *of it GC*
is the part of the longest block that was one of Python's full garbage collections (``FullCollections``):
the collector of napari's process, which a plugin may not tune; the last lines name the actions over the
target with and without it; the last, napari's own floors (``napari_alone``, another process, no plugin): the
block of its first image layer's ``add_image`` and one full collection of its heap holding two images, tracks
and points, beside one full collection in the walk's process at its end; and what new memory costs there
(``fresh_memory``: 16 MB allocated and written, the first time and after).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_scatter import Heartbeat, synthetic_obs  # noqa: E402
from scratch import scratch_dir  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

QUIET_MS, LOADED_MS = 200.0, 300.0
SETTLE_S = 0.2  # the heartbeat runs on this long after an action's result is shown (its paint)


class FullCollections:
    """When Python's full garbage collections (generation 2) ran in this process, from ``gc.callbacks``: the
    part of a block that is the collector's, not the plugin's work (≈ 0.1 s for napari's own objects on these
    machines, ≈ 0.2 s with the dock's; a guest plugin may not tune the collector, so it is reported, not
    avoided). Registered by the benchmark, in its own process."""

    def __init__(self):
        import gc

        self.spans: list[tuple[float, float]] = []
        self._start = None
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._start = time.perf_counter()
        elif self._start is not None:
            self.spans.append((self._start, time.perf_counter()))
            self._start = None

    def within(self, start: float, end: float) -> float:
        """Milliseconds of full collections between *start* and *end*."""
        return 1000 * sum(min(b, end) - max(a, start) for a, b in self.spans if b > start and a < end)


class BlockSampler:
    """``--where``: a thread that prints where the GUI thread is while it is blocked (its stack, innermost
    frames of this project and napari, sampled every 100 ms once a block is past 150 ms)."""

    def __init__(self, heartbeat: Heartbeat):
        import threading

        self.heartbeat = heartbeat
        self.main = threading.main_thread().ident
        self.seen: dict[str, int] = {}
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        import traceback

        while True:
            time.sleep(0.1)
            last = self.heartbeat._last
            try:
                active = self.heartbeat.timer.isActive()
            except RuntimeError:  # the timer is gone: the benchmark is over
                return
            if last is None or not active or time.perf_counter() - last < 0.15:
                continue
            frame = sys._current_frames().get(self.main)
            if frame is None:
                continue
            stack = [f for f in traceback.extract_stack(frame) if "site-packages/numpy" not in f.filename]
            where = " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in stack[::-1][:6])
            self.seen[where] = self.seen.get(where, 0) + 1

    def report(self) -> None:
        if self.seen:
            for where, n in sorted(self.seen.items(), key=lambda kv: -kv[1])[:8]:
                print(f"      {n * 100:>6} ms  {where}")
        self.seen.clear()


def full_collection() -> tuple[int, float]:
    """This process's tracked objects and the median time of three full garbage collections (ms)."""
    import gc

    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        gc.collect()
        times.append(1000 * (time.perf_counter() - t0))
    return len(gc.get_objects()), float(np.median(times))


def fresh_memory() -> tuple[float, float, int]:
    """Milliseconds to allocate and write the colours of 10⁶ cells (16 MB, float32 RGBA) three times in this process:
    the first and the median, and the page faults of the first. On these virtual machines memory the process has
    not touched yet costs far more per page than on a laptop: this is the floor under every action that makes a
    new array of 10⁶ cells (recolour, open a store)."""
    import resource

    times, faults = [], 0
    for i in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        block = np.empty((1_000_000, 4), np.float32)
        block.fill(1.0)
        times.append(1000 * (time.perf_counter() - t0))
        if i == 0:
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        del block
    return times[0], float(np.median(times)), faults


def napari_alone() -> tuple[float, int, float]:
    """napari without the plugin (another process), a shown viewer at a laptop's size: the longest GUI block of
    its first image layer's ``add_image`` (a time axis, as the walk's first FOV; its dims sliders, layer controls,
    vispy layer and first paint), then, holding what napari itself holds in the walk's first FOV (two image
    channels, tracks, points with a features table), :func:`full_collection`. napari's own costs: its first layer
    without the plugin (whose dock builds pint's unit registry and imports napari's first layer needs before it:
    load a predict.yml is what is left of it), and the floor under any block that holds a full collection."""
    return _in_another_process(_napari_alone)


def _napari_alone() -> tuple[float, int, float]:
    import napari
    import pandas as pd

    app = napari.qt.get_qapp()
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1366, 768)
    walk = Walk(app)
    settled = time.perf_counter() + 1.0  # the viewer's own first paints
    walk.until(lambda: time.perf_counter() >= settled)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 4000, (10, 256, 256), dtype=np.uint16) for _ in range(2)]
    walk.heartbeat.start()
    viewer.add_image(images[0], name="channel 0")
    end = time.perf_counter() + 0.5
    walk.until(lambda: time.perf_counter() >= end)
    first_layer = walk.heartbeat.stop()
    viewer.add_image(images[1], name="channel 1", blending="additive")
    tracks = np.column_stack([np.repeat(np.arange(15), 10), np.tile(np.arange(10), 15),
                              rng.uniform(0, 256, (150, 2))])  # the demo's FOV: 15 tracks of 10 frames
    viewer.add_tracks(tracks)
    viewer.add_points(tracks[:, 1:], features=pd.DataFrame({"track_id": tracks[:, 0].astype(int),
                                                              "t": tracks[:, 1].astype(int)}))
    end = time.perf_counter() + 1.0
    walk.until(lambda: time.perf_counter() >= end)  # (their first paints)
    objects, collection = full_collection()
    viewer.close()
    return first_layer, objects, collection


def busy_loop() -> None:
    while True:
        pass


class Walk:
    """Runs the actions and keeps the longest GUI block of each."""

    def __init__(self, app):
        from qtpy.QtCore import QEventLoop, QTimer

        self.app = app
        self.heartbeat = Heartbeat()
        self.rows: list[tuple[str, float, float, str, float]] = []  # name, block, seconds, note, full GC in it
        self.collections = FullCollections()
        self._loop_cls, self._timer_cls = QEventLoop, QTimer
        self.sampler = None
        self.end_heap: tuple[int, float] | None = None  # full_collection() at the walk's end
        self.end_memory: tuple[float, float, int] | None = None  # fresh_memory() at the walk's end

    def until(self, done, timeout_s: float = 900.0) -> None:
        """Run the event loop until *done()* holds (checked every 10 ms by a timer: a real event loop)."""
        loop = self._loop_cls()
        poll = self._timer_cls()
        poll.setInterval(10)
        t0 = time.perf_counter()

        def check():
            if done() or time.perf_counter() - t0 > timeout_s:
                loop.quit()

        poll.timeout.connect(check)
        poll.start()
        if not done():
            loop.exec()
        poll.stop()
        if not done():
            raise TimeoutError("an action did not finish")

    def measure(self, name: str, start, done, note=lambda: "") -> None:
        self.heartbeat.start()
        t0 = time.perf_counter()
        start()
        self.until(done)
        seconds = time.perf_counter() - t0
        end = time.perf_counter() + SETTLE_S
        self.until(lambda: time.perf_counter() >= end)
        block = self.heartbeat.stop()
        in_gc = self.collections.within(*self.heartbeat.longest)
        self.rows.append((name, block, seconds, note(), in_gc))
        gc_text = f"{in_gc:>6.0f} ms" if in_gc else f"{'':>9}"
        print(f"  {name:<22}{block:>8.0f} ms{gc_text}{seconds:>9.1f} s  {note()}", flush=True)
        if self.sampler is not None:
            self.sampler.report()


def demo_inputs(work: Path) -> dict:
    """The demo's plate, tracks, checkpoint and predict.yml, built in another process (which asks the plugin's
    work process): the measured process imports none of the plugin's modules before the dock opens (nor
    pandas), as a user's napari before Plugins > DynaCLR."""
    return _in_another_process(_demo_inputs, work)


def _demo_inputs(work: Path) -> dict:
    from napari_dynaclr._napari.workers import close_work_process, work_process
    from napari_dynaclr.core.synthetic import SyntheticSpec

    spec = SyntheticSpec(fovs_per_well=2, timepoints=10, cells_per_fov=15)
    inputs = work_process().call("demo_inputs", work, spec, umap=False)
    close_work_process()
    return inputs


def large_store(work: Path, cells: int, fov_cells: int, frames: int) -> Path:
    """A synthetic store of *cells* cells, written by another process: the table and its garbage never live in
    the measured process (a user's napari opens such a store, it does not make one)."""
    return _in_another_process(_write_large_store, work, cells, fov_cells, frames)


def _in_another_process(fn, *args):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _write_large_store(work: Path, cells: int, fov_cells: int, frames: int) -> Path:
    from napari_dynaclr.core.store import build_anndata, write_store

    obs, obsm = synthetic_obs(cells, fov_cells, frames)
    feats = np.random.default_rng(2).normal(size=(len(obs), 16)).astype(np.float32)
    adata = build_anndata(obs, feats, feats[:, :8])
    adata.obsm["X_umap"] = np.asarray(obsm["X_umap"], np.float32)
    return write_store(adata, work / "large.zarr")


def laptop_viewer(where: bool):
    """A shown napari viewer at a laptop's size and the :class:`Walk` that times actions in it (*where*: with
    the stack sampler of ``--where``).

    The plugin's modules are compiled first, as Python caches them at a user's first import: where
    ``PYTHONDONTWRITEBYTECODE`` is set (as on our CI machines) an editable install would otherwise be compiled
    again at every start, and its first imports in the GUI thread (opening the dock, loading a predict.yml) would
    measure the compiler (≈ 80 ms of 220 ms of the dock's first turn, measured)."""
    import compileall

    import napari

    import napari_dynaclr

    compileall.compile_dir(Path(napari_dynaclr.__file__).parent, quiet=1)
    app = napari.qt.get_qapp()
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1366, 768)
    walk = Walk(app)
    if where:
        walk.sampler = BlockSampler(walk.heartbeat)
    return viewer, walk


def walk_through(args, work: Path, inputs: dict, store: Path) -> Walk:
    viewer, walk = laptop_viewer(args.where)
    settled = time.perf_counter() + 1.0  # the viewer's own first paints
    walk.until(lambda: time.perf_counter() >= settled)
    # the dock's own start-up (its plot is made in the turn after it and its axes and key are drawn in stages,
    # plot_reveal.py): measured apart, so that its blocks are not counted as the first action's
    docks = []
    # as in a user's napari before Plugins > DynaCLR (and before any Points layer): the dock's first open imports
    # pandas (with pyarrow), ≈ 0.4 s of imports, on napari's GUI thread
    first = "first open, pandas not yet imported" if "pandas" not in sys.modules else "pandas imported before"
    walk.measure("open the dock",
                 lambda: docks.append(viewer.window.add_plugin_dock_widget("napari-dynaclr", "DynaCLR")[1]),
                 # (the pages made by the dock itself: asking for .explore earlier would make it now)
                 lambda: bool(docks) and docks[0].tabs.pending == 0 and docks[0].explore.scatter.ready,
                 lambda: first)
    main = docks[0]
    s, cells, verify = main.session, main.cells, main.verify
    import pandas as pd  # (after the dock: the dock's first open imports it, as in a user's napari)

    from napari_dynaclr._napari.widgets._jobs import is_running

    def idle(worker):
        return lambda: worker() is None or not is_running(worker())

    # the Predict tab
    main.predict_yml.value = inputs["config"]
    walk.measure("load a predict.yml", main.load_yml_btn.native.click,
                 lambda: main.status.value.startswith("loaded") and main.checks.plate_worker is None
                 and not main.ckpt_info.value.startswith("checking") and main.cells_info.value.endswith("predict")
                 and not is_running(getattr(main.checks, "preview_worker", None)),  # (its cells shown)
                 lambda: main.cells_info.value)
    if args.only_load:
        walk.end_heap = full_collection()
        viewer.close()
        walk.app.processEvents()
        return walk
    walk.measure("check a checkpoint", main.checks.inspect_checkpoint_now,
                 lambda: main.ckpt_info.value[:1] in ("✓", "✗"), lambda: main.ckpt_info.value[:60])
    main.output.value = work / "run.zarr"
    main.device.value = "cpu"
    walk.measure("predict the demo", main.run_btn.native.click,
                 lambda: main.worker is None and main.last_result is not None or main.last_error is not None,
                 lambda: f"{len(s.table)} cells; error: {main.last_error}")
    # the Cells tab, on the run's store
    main.tabs.setCurrentWidget(cells)
    cells.follow_clicks.value = True
    walk.measure("neighbours", lambda: s.highlight(3),
                 lambda: cells.worker("neighbours") is None and len(s.neighbours) > 1,
                 lambda: cells.neighbours_info.value[:60])
    cells.follow_clicks.value = False
    walk.until(idle(lambda: cells.worker("gallery")))
    walk.measure("gallery", lambda: s.select(np.arange(12)),
                 lambda: cells.worker("gallery") is None and len(cells.tile_rows) == 12,
                 lambda: cells.gallery_info.value[:60])
    truth = pd.read_csv(inputs["truth"])
    table = s.table.merge(truth, on=["fov_name", "track_id", "t"], how="left")
    s.select(np.flatnonzero(table["cell_type"].to_numpy() == "A")[::2])
    main.explore.assign_selection("round")
    walk.until(lambda: cells.worker("classifier") is None)  # one class: nothing to train yet

    def label_second():
        s.select(np.flatnonzero(table["cell_type"].to_numpy() == "B")[::2])
        main.explore.assign_selection("elongated")

    walk.measure("classifier", label_second,
                 lambda: s.color_column == "predicted_annotation" and cells.worker("classifier") is None,
                 lambda: cells.classifier_info.value[:60])
    # the Verify tab: the run's store against itself
    main.tabs.setCurrentWidget(verify)
    verify.prediction_combo.setCurrentIndex(verify.prediction_combo.findData("file"))
    verify.prediction_edit.setText(str(work / "run.zarr"))
    verify.reference_edit.setText(str(work / "run.zarr"))
    verify.report = None
    walk.measure("verify", verify.run_button.click,
                 lambda: verify.state == "ready" and (verify.report is not None or bool(verify.last_error)),
                 lambda: verify.verdict_label.text()[:60])
    # a large store: open it, then the Explore tab's interactions
    main.store.value = store
    walk.measure("open a store", main.open_btn.native.click,
                 lambda: main.opener.worker is not None and not is_running(main.opener.worker)
                 and s.store_path == store, lambda: f"{len(s.table):,} cells")
    view = main.explore
    xy = view.xy()
    lo, hi = np.nanmin(xy, axis=0), np.nanmax(xy, axis=0)
    rng = np.random.default_rng(1)
    fovs = s.fov_names()
    ang = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    for column in ("track_id", "t"):
        walk.measure(f"recolour ({column})", lambda c=column: s.color_by(c), lambda c=column: s.color_column == c)
    for i in range(2):
        c = lo + (hi - lo) * rng.uniform(0.3, 0.7, 2)
        r = (hi - lo) * 0.25
        polygon = c + r * np.column_stack([np.cos(ang), np.sin(ang)])
        walk.measure(f"lasso {i + 1}", lambda p=polygon: view.select_polygon(p, mode="replace"), lambda: True,
                     lambda: f"{len(s.selected):,} selected")
    for i in range(2):
        walk.measure(f"time step {i + 1}", lambda i=i: viewer.dims.set_point(0, 7 * i + 3), lambda: True)
    for i in range(2):
        target = fovs[(fovs.index(s.fov_name) + 1) % len(fovs)]
        walk.measure(f"FOV switch {i + 1}", lambda f=target: s.show_fov(f), lambda f=target: s.fov_name == f)
    walk.end_heap = full_collection()
    walk.end_memory = fresh_memory()
    viewer.close()
    walk.app.processEvents()
    return walk


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--load", action="store_true", help="two busy loops beside the walk-through")
    ap.add_argument("--where", action="store_true", help="print where the GUI thread was while blocked")
    ap.add_argument("--only-load", action="store_true",
                    help="only the first action (load a predict.yml, in a fresh process: its first-use costs)")
    ap.add_argument("--cells", type=int, default=1_000_000, help="cells of the large store")
    ap.add_argument("--fov-cells", type=int, default=100_000)
    ap.add_argument("--frames", type=int, default=100)
    args = ap.parse_args(argv)
    work = scratch_dir("dynaclr-heartbeat-")
    inputs = demo_inputs(work)
    t0 = time.perf_counter()
    store = None if args.only_load else large_store(work, args.cells, args.fov_cells, args.frames)
    if store is not None:
        print(f"large store: {args.cells:,} cells written in {time.perf_counter() - t0:.0f} s", flush=True)
    busy = []
    if args.load:
        busy = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(2)]
        for p in busy:
            p.start()
    alone = napari_alone()  # (beside the busy loops too: as the walk's own collections)
    load0 = os.getloadavg()[0]
    target = LOADED_MS if args.load else QUIET_MS
    print(f"{'two busy loops' if args.load else 'no busy loops'}; load average {load0:.1f} at the start; "
          f"target {target:.0f} ms\n  {'action':<22}{'longest block':>11}{'of it GC':>10}{'until shown':>12}")
    try:
        walk = walk_through(args, work, inputs, store)
    finally:
        for p in busy:
            p.terminate()
    load1 = os.getloadavg()[0]
    worst = max(walk.rows, key=lambda row: row[1])
    over = [name for name, block, *_ in walk.rows if block > target]
    over_apart = [name for name, block, _, _, in_gc in walk.rows if block - in_gc > target]
    print(f"load average {load1:.1f} at the end; worst: {worst[0]} {worst[1]:.0f} ms "
          f"(ratio to the target {worst[1] / target:.2f}); over the target: {over or 'none'}; "
          f"over it without the full garbage collections in them: {over_apart or 'none'}")
    print(f"napari alone (no plugin, another process): its first image layer's add_image blocks {alone[0]:.0f} ms; "
          f"one full garbage collection (median of 3) with two images, tracks and points {alone[2]:.0f} ms "
          f"({alone[1]:,} objects); in the walk's process at its end {walk.end_heap[1]:.0f} ms "
          f"({walk.end_heap[0]:,} objects)")
    if walk.end_memory is not None:
        first, median, faults = walk.end_memory
        print(f"new memory in the walk's process at its end: 16 MB (the colours of 10⁶ cells) allocated and written "
              f"in {first:.0f} ms the first time ({faults:,} page faults), {median:.0f} ms median of 3")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
