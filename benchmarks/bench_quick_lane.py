"""Quick answers while a long request runs: the latency of neighbours, gallery and classifier-retrain requests
(as the Cells tab sends them) while a UMAP of --rows x --dims (or a prediction of the demo plate) runs, with the
plugin's two work processes (a quick lane beside the heavy one) and with the old single work process.

    .venv/bin/python benchmarks/bench_quick_lane.py [--rows 100000] [--dims 768] [--n 20] [--long umap|predict]

For each mode the lanes start fresh and are warmed as a store's open warms them (the quick lane imports its
libraries and holds the matrix); one request of each kind is sent before the long one starts (its latency is
printed as "first", it pays the gallery's torch import); then the long request starts and, once the heavy lane
is busy with it, the quick requests are timed:

* two lanes: --n rounds of (neighbours of a random cell, gallery of 8 cells, classifier retrain on 10 labels),
  one request after the other, as long as the long request runs;
* single lane (every request to the one work process, as before the quick lane): a round of the three requests
  every --interval seconds, each sent from its own thread, as a user clicking while the long request runs;
  each waits for the long request to end.

Prints per kind the median and the maximum latency, how many answered while the long request was still
running, the long request's duration, and the machine's load average (before, during, after) and core count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path
from unittest import mock

import numpy as np

from scratch import scratch_dir

KINDS = ("neighbours", "gallery", "classifier")


def drain(gen):
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


class Bench:
    def __init__(self, args, inputs):
        from napari_dynaclr._napari import workers
        from napari_dynaclr.core.predict_yml import load_predict_yaml

        self.args, self.workers = args, workers
        rng = np.random.default_rng(0)
        centres = rng.normal(size=(8, args.dims)).astype(np.float32)
        self.X = (centres[rng.integers(0, 8, args.rows)] + rng.normal(size=(args.rows, args.dims))
                  ).astype(np.float32)
        self.labels = np.full(args.rows, None, dtype=object)
        picked = rng.choice(args.rows, 10, replace=False)
        self.labels[picked] = ["infected", "uninfected"] * 5
        self.groups = np.array([f"A/1/0::{i}" for i in range(args.rows)], dtype=object)
        self.cfg = load_predict_yaml(inputs["config"])
        self.cells = workers.preview_cells(self.cfg)[["fov_name", "track_id", "t"]]
        self.inputs = inputs
        self.rng = rng

    def quick(self, kind: str, token: str):
        w = self.workers
        if kind == "neighbours":
            return w.neighbours_job(token, self.X, "cosine", int(self.rng.integers(self.args.rows)), 10)
        if kind == "gallery":
            rows = self.rng.choice(len(self.cells), 8, replace=False)
            return w.gallery_job(self.cfg, self.cells.iloc[np.sort(rows)], "middle slice")
        return w.classify_job(token, self.X, self.labels, self.groups, "infection")

    def long(self, out: Path):
        if self.args.long == "umap":
            return self.workers.reduction_job(self.X, "UMAP")
        return self.workers.prediction_job(self.cfg.with_overrides(output_path=out, overwrite=True))

    def run(self, single: bool) -> dict:
        w = self.workers
        w.close_work_process()
        lanes = {k: "heavy" for k in w.LANES} if single else dict(w.LANES)
        token = f"bench-{single}"
        with mock.patch.dict(w.LANES, lanes):
            t0 = time.perf_counter()
            drain(w.warm_job(token, self.X))
            warm_s = time.perf_counter() - t0
            first = {}
            for kind in KINDS:
                t0 = time.perf_counter()
                drain(self.quick(kind, token))
                first[kind] = time.perf_counter() - t0
            done = threading.Event()
            span = {}

            def long_request():
                t0 = time.perf_counter()
                try:
                    drain(self.long(scratch_dir("bench-lane-") / "out.zarr"))
                finally:
                    span["s"] = time.perf_counter() - t0
                    done.set()

            threading.Thread(target=long_request, daemon=True).start()
            heavy = w.work_process("heavy")
            while heavy.pid is None and not done.is_set():  # the heavy lane is up and serving it
                time.sleep(0.05)
            time.sleep(self.args.settle)
            load_before = load()
            lat: dict = {k: [] for k in KINDS}
            during: dict = {k: 0 for k in KINDS}
            lock = threading.Lock()

            def timed(kind):
                t0 = time.perf_counter()
                drain(self.quick(kind, token))
                running = not done.is_set()
                with lock:
                    lat[kind].append(time.perf_counter() - t0)
                    during[kind] += running

            threads = []
            for _ in range(self.args.n):
                if done.is_set():
                    break
                if single:
                    for kind in KINDS:
                        th = threading.Thread(target=timed, args=(kind,), daemon=True)
                        th.start()
                        threads.append(th)
                    done.wait(self.args.interval)
                else:
                    for kind in KINDS:
                        timed(kind)
            load_during = load()
            for th in threads:
                th.join()
            done.wait()
        w.close_work_process()
        return {"warm": warm_s, "first": first, "lat": lat, "during": during, "long": span["s"],
                "load": (load_before, load_during, load())}


def report(name: str, res: dict) -> None:
    print(f"\n{name}: long request {res['long']:.1f} s; load avg (1/5/15 min) before {res['load'][0]}, "
          f"during {res['load'][1]}, after {res['load'][2]}; warm-up {res['warm']:.2f} s")
    print(f"  {'request':<11} {'first':>7} {'n':>3} {'median':>8} {'max':>8}  answered while the long one ran")
    for kind in KINDS:
        v = res["lat"][kind]
        med = statistics.median(v) if v else float("nan")
        mx = max(v) if v else float("nan")
        print(f"  {kind:<11} {res['first'][kind]:>6.2f}s {len(v):>3} {med:>7.3f}s {mx:>7.3f}s  "
              f"{res['during'][kind]}/{len(v)}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--dims", type=int, default=768)
    p.add_argument("--n", type=int, default=20, help="rounds of the three quick requests")
    p.add_argument("--long", choices=("umap", "predict"), default="umap")
    p.add_argument("--interval", type=float, default=3.0, help="seconds between rounds (single lane)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds after the long request starts")
    p.add_argument("--modes", default="two,single")
    args = p.parse_args(argv)

    from napari_dynaclr.core.synthetic import SyntheticSpec
    from napari_dynaclr.demo import make_demo_inputs

    folder = scratch_dir("bench-lane-demo-") / "demo"
    spec = SyntheticSpec(fovs_per_well=2, timepoints=20, cells_per_fov=25)
    inputs = make_demo_inputs(folder, spec, umap=False)
    bench = Bench(args, inputs)
    print(f"{os.cpu_count()} cores; matrix {args.rows} x {args.dims}; long request: "
          f"{'UMAP of the matrix' if args.long == 'umap' else 'prediction of the demo plate'}")
    for mode in args.modes.split(","):
        report("two lanes (quick + heavy)" if mode == "two" else "single lane (before)", bench.run(mode == "single"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
