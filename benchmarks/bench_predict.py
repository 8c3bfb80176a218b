"""Prediction throughput benchmark (issue 5): data path, model only, end to end, ratio and peak RSS.

    python benchmarks/bench_predict.py                       # 4,000-cell plate in a temp folder, CPU
    python benchmarks/bench_predict.py --cells 40000 --model-batches 16
    python benchmarks/bench_predict.py --device cuda --precision bf16-mixed --channels-last

One run prints, for the benchmark plate (see ``make_bench_plate.py``; convnext_tiny, 1 channel,
stem (1,4,4), projection 32, patch 160 x 160, z_range [0, 1], batch 64, NormalizeSampled on
fov_statistics):

* data path cells/s: read + crop + normalise through ``predict_batches`` (read-ahead threads) with a
  model that returns zeros, whole plate, results into an ``EmbeddingAccumulator``;
* model-only cells/s: the encoder on random tensors of the same batch shapes (no I/O);
* end-to-end cells/s: ``predict_batches`` with the encoder (what ``run_prediction`` runs);
* e2e / model-only, and peak RSS (per phase, sampled every 5 ms with psutil, and the process maximum).

Each figure is measured ``--repeats`` times (default 3); the median is reported, with every run listed.
``--model-batches K`` limits model-only and e2e to the first K batches (the data path always reads the
whole plate); the CPU encoder runs at ~30 cells/s, so the full 4,000 cells take ~2 min per phase.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


class PeakRSS:
    """Peak resident set size of this process while the block runs (psutil sampling thread)."""

    def __init__(self, interval: float = 0.005):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def max_rss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def make_config(plate_dir: Path, args):
    from napari_dynaclr.core.config import PredictConfig
    from napari_dynaclr.core.normalize import NormalizeSampled

    return PredictConfig(
        data_path=plate_dir / "plate.zarr",
        tracks_path=plate_dir / "tracks",
        source_channel=["Phase3D"],
        z_range=(0, 1),
        initial_yx_patch_size=(args.patch, args.patch),
        final_yx_patch_size=(args.patch, args.patch),
        batch_size=args.batch_size,
        normalizations=[NormalizeSampled(keys=("Phase3D",), level="fov_statistics")],
        precision=args.precision,
        num_workers=args.loader_threads,
    )


def make_model(seed: int = 0):
    import torch

    from napari_dynaclr.core.architecture import EncoderConfig
    from napari_dynaclr.model.encoder import ContrastiveEncoder

    torch.manual_seed(seed)
    return ContrastiveEncoder(EncoderConfig(backbone="convnext_tiny", in_channels=1, in_stack_depth=1,
                                            projection_dim=32)).eval()


class NullModel:
    """Stands in for the encoder in the data-path phase: returns zero embeddings of the right shape.

    The zeros are allocated once: a fresh ``torch.zeros(64, 768)`` per batch is large enough to start
    an OpenMP parallel region, whose spinning worker threads would then compete with the loader threads
    and make the data path look slower than it is.
    """

    def __init__(self, num_features: int = 768, projection_dim: int = 32, max_batch: int = 4096):
        import torch

        self.feats = torch.zeros(max_batch, num_features)
        self.projs = torch.zeros(max_batch, projection_dim)

    def to(self, *a, **k):
        return self

    def eval(self):
        return self

    def __call__(self, x):
        b = x.shape[0]
        return self.feats[:b], self.projs[:b]


def run_stream(cfg, model, device, args, batches=None):
    """predict_batches over the plan (or the first batches), results into an accumulator."""
    from napari_dynaclr.predict.batches import EmbeddingAccumulator
    from napari_dynaclr.predict.plan import plan_prediction
    from napari_dynaclr.predict.single import predict_batches

    plan = plan_prediction(cfg)
    try:
        idx = list(range(plan.n_batches)) if batches is None else list(range(min(batches, plan.n_batches)))
        n = plan.batch_bounds(idx[-1])[1]
        acc = EmbeddingAccumulator(plan.n_cells, 768, 32)
        t0 = time.perf_counter()
        for res in predict_batches(plan, model, device, precision=args.precision,
                                   loader_threads=args.loader_threads, batches=idx,
                                   channels_last=args.channels_last):
            acc.add(res)
        dt = time.perf_counter() - t0
    finally:
        plan.close()
    return n, dt, acc


def run_model_only(model, shapes, device, args):
    import torch

    from napari_dynaclr.predict.single import _precision_context

    model = model.to(device).eval()
    true_dtype = {"bf16-true": torch.bfloat16, "16-true": torch.float16}.get(args.precision)
    if true_dtype is not None:
        model = model.to(true_dtype)
    if args.channels_last:
        for mod in model.modules():
            if isinstance(mod, torch.nn.Conv2d):
                mod.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(1)
    cache = {}
    n = 0
    with torch.inference_mode(), _precision_context(args.precision, device):
        t0 = time.perf_counter()
        for shape in shapes:
            if shape not in cache:
                cache[shape] = torch.randn(shape, generator=g)
            x = cache[shape].to(device)
            if true_dtype is not None:
                x = x.to(true_dtype)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            f, p = model(x)
            f.float().cpu().numpy(), p.float().cpu().numpy()  # same sync point as predict_batches
            n += shape[0]
        dt = time.perf_counter() - t0
    return n, dt


def batch_shapes(cfg, n_cells: int, k: int | None):
    b = cfg.batch_size
    sizes = [min(b, n_cells - s) for s in range(0, n_cells, b)]
    if k is not None:
        sizes = sizes[:k]
    py, px = cfg.patch_size
    return [(s, len(cfg.source_channel), cfg.z_depth, py, px) for s in sizes]


def med(xs):
    return statistics.median(xs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=4000, help="plate size (default 4000: the issue's plate)")
    p.add_argument("--plate-dir", type=Path, help="reuse/create the plate here (default: a temp folder)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--patch", type=int, default=160)
    p.add_argument("--precision", default="32-true", help="32-true, bf16-mixed, 16-mixed (cuda)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--loader-threads", type=int, default=2)
    p.add_argument("--torch-threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model-batches", type=int, help="limit model-only and e2e to the first K batches")
    p.add_argument("--skip-model", action="store_true", help="data path only")
    p.add_argument("--json", type=Path, help="also write all figures here")
    args = p.parse_args(argv)

    import torch

    from make_bench_plate import make_bench_plate

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    tmp = None
    plate_dir = args.plate_dir
    if plate_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="dynaclr-bench-")
        plate_dir = Path(tmp.name)
    if not (plate_dir / "plate.zarr").exists():
        t0 = time.perf_counter()
        info = make_bench_plate(plate_dir, args.cells)
        print(f"generated {info['cells']} cells in {info['fovs']} FOVs at {plate_dir} "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
    cfg = make_config(plate_dir, args)
    device = args.device

    res = {"data": [], "model": [], "e2e": [], "rss_data": [], "rss_model": [], "rss_e2e": []}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} threads {torch.get_num_threads()}, load {os.getloadavg()}", flush=True)
    model = None if args.skip_model else make_model()
    n_cells = None
    for r in range(args.repeats):
        with PeakRSS() as m:
            n_cells, dt, _ = run_stream(cfg, NullModel(), device, args)
        res["data"].append(n_cells / dt)
        res["rss_data"].append(m.peak)
        res.setdefault("rss_before_data", []).append(m.start)
        print(f"[{r + 1}] data path: {n_cells} cells in {dt:.2f} s = {n_cells / dt:,.0f} cells/s, "
              f"peak RSS {m.peak / 2**20:,.0f} MiB (at start {m.start / 2**20:,.0f})", flush=True)
        if model is None:
            continue
        with PeakRSS() as m:
            n, dt = run_model_only(model, batch_shapes(cfg, n_cells, args.model_batches), device, args)
        res["model"].append(n / dt)
        res["rss_model"].append(m.peak)
        print(f"[{r + 1}] model only: {n} cells in {dt:.2f} s = {n / dt:,.1f} cells/s", flush=True)
        with PeakRSS() as m:
            n, dt, _ = run_stream(cfg, model, device, args, batches=args.model_batches)
        res["e2e"].append(n / dt)
        res["rss_e2e"].append(m.peak)
        print(f"[{r + 1}] end to end: {n} cells in {dt:.2f} s = {n / dt:,.1f} cells/s, "
              f"peak RSS {m.peak / 2**20:,.0f} MiB (at start {m.start / 2**20:,.0f})", flush=True)

    summary = {
        "cells": n_cells,
        "device": device,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "loader_threads": args.loader_threads,
        "torch_threads": torch.get_num_threads(),
        "model_batches": args.model_batches,
        "repeats": args.repeats,
        "loadavg_end": os.getloadavg(),
        "data_cells_per_s": med(res["data"]),
        "peak_rss_data_mib": med(res["rss_data"]) / 2**20,
        "max_rss_mib": max_rss_bytes() / 2**20,
        "runs": res,
    }
    if res["model"]:
        summary.update(
            model_cells_per_s=med(res["model"]),
            e2e_cells_per_s=med(res["e2e"]),
            ratio_e2e_model=med([e / m for e, m in zip(res["e2e"], res["model"], strict=True)]),
            peak_rss_e2e_mib=med(res["rss_e2e"]) / 2**20,
        )
    print(f"\n== median of {args.repeats} ({n_cells} cells, {device}, {args.precision}, batch {args.batch_size}, "
          f"{args.loader_threads} loader threads, torch threads {torch.get_num_threads()}) ==")
    print(f"data path     {summary['data_cells_per_s']:>10,.0f} cells/s   "
          f"(peak RSS {summary['peak_rss_data_mib']:,.0f} MiB)")
    if res["model"]:
        print(f"model only    {summary['model_cells_per_s']:>10,.1f} cells/s")
        print(f"end to end    {summary['e2e_cells_per_s']:>10,.1f} cells/s   "
              f"(peak RSS {summary['peak_rss_e2e_mib']:,.0f} MiB)")
        print(f"e2e / model   {summary['ratio_e2e_model']:>10.3f}")
    print(f"process max RSS {summary['max_rss_mib']:,.0f} MiB; load average {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=float))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
