"""GUI responsiveness during a prediction run in the napari widget (target: no GUI-thread stall >= 100 ms).

Builds a synthetic demo plate (in the plugin's work process: this process, napari's, never imports
torch), docks the DynaCLR widget in a real napari window (run under Xvfb), starts a run through the
widget (the engine in the work process, batches streaming to a thread worker and into the layers and
the scatter) and measures, with a 5 ms QTimer on the GUI thread, the longest gap between timer ticks:
the longest time the event loop was blocked. Two phases are measured apart: choosing the inputs (the
widget plans the run without a model and builds the FOV's layers once: napari's own layer-building
cost) and the run itself (from a cold work process, as a user's first run). Also prints the process
RSS before and after the run, and whether torch was imported here.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/bench_gui_stall.py --umap
"""

from __future__ import annotations

import argparse
import sys
import time

from scratch import scratch_dir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells-per-fov", type=int, default=25)
    p.add_argument("--timepoints", type=int, default=20)
    p.add_argument("--fovs-per-well", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--umap", action="store_true",
                   help="also compute UMAP at the end of the run (the widget's default)")
    args = p.parse_args(argv)

    import numpy as np
    import psutil

    from napari_dynaclr._napari.workers import close_work_process, work_process
    from napari_dynaclr.core.synthetic import SyntheticSpec

    work = scratch_dir("dynaclr-gui-")
    spec = SyntheticSpec(fovs_per_well=args.fovs_per_well, timepoints=args.timepoints,
                         cells_per_fov=args.cells_per_fov)
    inputs = work_process().call("demo_inputs", work, spec, umap=False)
    close_work_process()  # the run starts a fresh one, as a user's first run does

    import napari
    from qtpy.QtCore import QElapsedTimer, QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    _, main_w = viewer.window.add_plugin_dock_widget("napari-dynaclr", "DynaCLR")
    viewer.window.add_plugin_dock_widget("napari-dynaclr", "Embedding view")
    clock = QElapsedTimer()
    clock.start()
    import gc

    collections = []  # (GUI-clock ms at the end, generation, ms) of full and slow collections, measured only

    gc_start = [0.0]

    def on_gc(phase, info):
        now = clock.nsecsElapsed() / 1e6
        if phase == "start":
            gc_start[0] = now
        elif info["generation"] == 2 or now - gc_start[0] > 20:
            collections.append((round(now), info["generation"], round(now - gc_start[0])))

    gc.callbacks.append(on_gc)  # the benchmark's own instrumentation (the plugin tunes nothing)

    def watch(start, finished_signal) -> tuple[np.ndarray, list, list]:
        """Run *start()* and the event loop until *finished_signal*; return the 5 ms timer's gaps."""
        ticks, long_gaps, events = [clock.nsecsElapsed() / 1e6], [], []

        def tick():
            now = clock.nsecsElapsed() / 1e6
            if now - ticks[-1] > 100:
                long_gaps.append((round(now), round(now - ticks[-1])))
            ticks.append(now)

        timer = QTimer()
        timer.setInterval(5)
        timer.timeout.connect(tick)
        loop = QEventLoop()
        obj = start()
        finished_signal(obj).connect(lambda *_: loop.quit())
        if hasattr(obj, "yielded"):  # (None: the worker's heartbeat)
            obj.yielded.connect(lambda ev: ev is None
                                or events.append((type(ev).__name__, round(clock.nsecsElapsed() / 1e6))))
        timer.start()
        loop.exec_()
        tick()  # the gap up to the end (the finishing callback may end a long stall)
        timer.stop()
        return np.diff(ticks), long_gaps, events

    def report(name, gaps, long_gaps):
        print(f"{name}: GUI-thread gaps (5 ms timer): longest {gaps.max():.0f} ms, 99th percentile "
              f"{np.percentile(gaps, 99):.0f} ms, median {np.median(gaps):.1f} ms over {len(gaps)} ticks "
              f"-> target < 100 ms: {'MET' if gaps.max() < 100 else 'MISSED'}")
        print(f"  stalls > 100 ms (ms since start, length): {long_gaps}")

    # 1. choosing the inputs: the widget reads the plate and plans the run in workers, then shows the
    #    cells to predict (until the preview's layers are built)
    def choose_inputs():
        main_w.load_predict_yml(inputs["config"])
        main_w.output.value = work / "gui-run.zarr"
        main_w.device.value = "cpu"
        main_w.batch_size.value = args.batch_size
        main_w.umap.value = args.umap
        return main_w.session

    gaps, long_gaps, _ = watch(choose_inputs, lambda session: session.fov_changed)  # (layers built)
    QApplication.processEvents()
    print(f"preview: {main_w.cells_info.value}; layers: {len(viewer.layers)}")
    report("choosing the inputs (one-off layer build)", gaps, long_gaps)

    # 2. the run: model in the work process, batches streaming into the layers and the scatter
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    gaps, long_gaps, events = watch(main_w.run, lambda w: w.finished)
    seconds = time.perf_counter() - t0
    n = sum(1 for b, _ in events if b == "Batch")
    cells = len(main_w.session.table) if main_w.session.table is not None else 0
    print(f"run: {cells} cells, {n} batches streamed in {seconds:.1f} s (incl. PCA and writing); "
          f"error: {main_w.last_error}")
    report("the run", gaps, long_gaps)
    print(f"  events: {[e for e in events if e[0] != 'Batch']}")
    print(f"  garbage collections (any thread; ms since start, generation, ms): {collections}")
    print(f"RSS before the run {rss0 / 2**20:.0f} MiB, after {proc.memory_info().rss / 2**20:.0f} MiB; "
          f"torch imported in napari's process: {'torch' in sys.modules}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
