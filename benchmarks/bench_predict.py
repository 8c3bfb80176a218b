"""Prediction throughput benchmark (issues 5 and 15): data path, model only, whole pipeline, peak RSS.

    python benchmarks/bench_predict.py                       # 2-D 4,000-cell plate in a temp folder, CPU
    python benchmarks/bench_predict.py --kind 3d --plate-dir /tmp/b3d --backends eager,auto --pipeline
    python benchmarks/bench_predict.py --cells 40000 --kind 3d --skip-model      # data path only
    python benchmarks/bench_predict.py --device cuda --precision bf16-mixed --channels-last

Plates (``make_bench_plate.py``): ``--kind 2d`` is issue 5's plate (1 channel, z_range [0, 1], whole-plane
chunks, NormalizeSampled, a 2-D stem (1, 4, 4)); ``--kind 3d`` is shaped like VisCy's reference predict.yml
(Phase3D + RFP, z_range [0, 30], one z-slice per chunk, NormalizeSampled on Phase3D and
ScaleIntensityRangePercentilesd 50 – 99 on RFP, a 3-D stem in_stack_depth 30 kernel (5, 4, 4)). Both:
convnext_tiny, projection 32, 160-px patches. One run prints, per repeat:

* data path cells/s: read + crop + normalise through ``predict_batches`` (read-ahead threads) with a
  model that returns zeros, whole plate, results into an ``EmbeddingAccumulator``;
* model only cells/s, per ``--backends`` entry (eager, auto, openvino, onednn): the encoder on random tensors
  of the same batch shapes (no I/O);
* batches cells/s, per backend: ``predict_batches`` with the encoder (the model loop of a run);
* ``--pipeline``, per backend: the whole ``napari-dynaclr predict -c predict.yml`` command in a fresh
  process, from interpreter start and checkpoint to the written store (planning, AnnData, PCA with 8
  components, writing); its wall time, cells/s and the child's peak RSS;
* peak RSS (per phase, sampled every 5 ms with psutil, and the process maximum).

Backends run interleaved within each repeat (eager, then auto, ...), so background load hits them alike.
Each figure is measured ``--repeats`` times (default 3); the median is reported, with every run listed.
``--model-batches K`` limits model-only and batches to the first K batches (the data path always reads the
whole plate; the pipeline always predicts the whole plate).
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
    from make_bench_plate import BENCH_3D
    from napari_dynaclr.core.config import PredictConfig
    from napari_dynaclr.core.normalize import NormalizeSampled, ScaleIntensityRangePercentiles

    if args.kind == "3d":
        channels, z_range = BENCH_3D["channels"], BENCH_3D["z_range"]
        norms = [NormalizeSampled(keys=("Phase3D",), level="fov_statistics"),
                 ScaleIntensityRangePercentiles(keys=("RFP",), lower=50, upper=99, b_min=0.0, b_max=1.0)]
    else:
        channels, z_range = ["Phase3D"], (0, 1)
        norms = [NormalizeSampled(keys=("Phase3D",), level="fov_statistics")]
    return PredictConfig.classic(
        data_path=plate_dir / "plate.zarr",
        tracks_path=plate_dir / "tracks",
        source_channel=channels,
        z_range=z_range,
        initial_yx_patch_size=(args.patch, args.patch),
        final_yx_patch_size=(args.patch, args.patch),
        batch_size=args.batch_size,
        normalizations=norms,
        precision=args.precision,
        num_workers=args.loader_threads,
    )


def encoder_config(kind: str):
    from make_bench_plate import BENCH_3D
    from napari_dynaclr.core.architecture import EncoderConfig

    if kind == "3d":
        return EncoderConfig(backbone="convnext_tiny", in_channels=2, in_stack_depth=BENCH_3D["in_stack_depth"],
                             stem_kernel_size=BENCH_3D["stem"], stem_stride=BENCH_3D["stem"], projection_dim=32)
    return EncoderConfig(backbone="convnext_tiny", in_channels=1, in_stack_depth=1, projection_dim=32)


def make_model(kind: str = "2d", seed: int = 0):
    """convnext_tiny with random weights; layer-scale γ drawn in [0.2, 1] (timm's 1e-6 init would make every
    block nearly the identity, unlike a trained model)."""
    import torch

    from napari_dynaclr.model.encoder import ContrastiveEncoder

    torch.manual_seed(seed)
    model = ContrastiveEncoder(encoder_config(kind)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.2, 1.0)
    return model


def write_predict_yml(plate_dir: Path, args, model) -> Path:
    """A VisCy-layout predict.yml (and model.ckpt) for the plate: what ``--pipeline`` runs."""
    import yaml

    from napari_dynaclr.model.checkpoint import save_checkpoint

    cfg = make_config(plate_dir, args)
    enc = model.config
    save_checkpoint(model, plate_dir / "model.ckpt")
    norms = []
    for n in cfg.source.normalizations:
        if type(n).__name__ == "NormalizeSampled":
            norms.append({"class_path": "viscy_transforms.NormalizeSampled",
                          "init_args": {"keys": list(n.keys), "level": n.level, "subtrahend": "mean",
                                        "divisor": "std"}})
        else:
            norms.append({"class_path": "viscy_transforms.ScaleIntensityRangePercentilesd",
                          "init_args": {"keys": list(n.keys), "lower": n.lower, "upper": n.upper,
                                        "b_min": n.b_min, "b_max": n.b_max}})
    doc = {
        "seed_everything": 42,
        "trainer": {"accelerator": args.device, "strategy": "auto", "devices": 1, "num_nodes": 1,
                    "precision": args.precision, "inference_mode": True,
                    "callbacks": [{"class_path": "viscy_utils.callbacks.embedding_writer.EmbeddingWriter",
                                   "init_args": {"output_path": "prediction.zarr",
                                                 "pca_kwargs": {"n_components": 8}}}]},
        "model": {"class_path": "dynaclr.engine.ContrastiveModule", "init_args": {"encoder": {
            "class_path": "viscy_models.contrastive.ContrastiveEncoder",
            "init_args": {"backbone": enc.backbone, "in_channels": enc.in_channels,
                          "in_stack_depth": enc.in_stack_depth, "stem_kernel_size": list(enc.stem_kernel_size),
                          "stem_stride": list(enc.stem_stride), "embedding_dim": enc.embedding_dim,
                          "projection_dim": enc.projection_dim, "drop_path_rate": 0.0, "pretrained": False}}}},
        "data": {"class_path": "viscy_data.triplet.TripletDataModule", "init_args": {
            "data_path": "plate.zarr", "tracks_path": "tracks", "source_channel": list(cfg.source.source_channel),
            "z_range": list(cfg.source.z_range), "batch_size": cfg.batch_size, "num_workers": cfg.num_workers,
            "initial_yx_patch_size": list(cfg.source.initial_yx_patch_size),
            "final_yx_patch_size": list(cfg.source.patch_size), "normalizations": norms}},
        "ckpt_path": "model.ckpt",
    }
    path = plate_dir / "predict.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_pipeline(yml: Path, backend: str, args):
    """``napari-dynaclr predict -c predict.yml`` in a fresh process: wall seconds, the child's peak RSS, its CPU
    seconds (user + system, all its threads: a figure that other load on the machine barely changes) and its
    last output lines."""
    import subprocess

    import psutil

    out = yml.parent / f"prediction-{backend}.zarr"
    cmd = [sys.executable, "-m", "napari_dynaclr", "predict", "-c", str(yml), "--output", str(out),
           "--overwrite", "--device", args.device, "--quiet"]
    env = dict(os.environ)
    if backend == "before":  # another source tree (e.g. ``git archive <commit> src``), its own defaults
        env["PYTHONPATH"] = os.pathsep.join([str(Path(args.before_src).resolve()), env.get("PYTHONPATH", "")])
    else:
        cmd += ["--cpu-backend", backend]
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.02)
    dt = time.perf_counter() - t0
    stdout, stderr = proc.communicate()
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    if proc.returncode:
        raise SystemExit(f"pipeline ({backend}) failed ({proc.returncode}):\n{stderr[-3000:]}")
    return dt, peak, cpu, stdout.strip().splitlines()[-2:]


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


def run_stream(cfg, model, device, args, batches=None, backend="eager"):
    """predict_batches over the plan (or the first batches), results into an accumulator."""
    from napari_dynaclr.predict.events import EmbeddingAccumulator
    from napari_dynaclr.predict.plan import plan_prediction
    from napari_dynaclr.predict.single import predict_batches

    plan = plan_prediction(cfg)
    info: dict = {}
    try:
        idx = list(range(plan.n_batches)) if batches is None else list(range(min(batches, plan.n_batches)))
        n = plan.batch_bounds(idx[-1])[1]
        acc = EmbeddingAccumulator(plan.n_cells, 768, 32)
        t0 = time.perf_counter()
        for res in predict_batches(plan, model, device, precision=args.precision,
                                   loader_threads=args.loader_threads, batches=idx,
                                   channels_last=args.channels_last, cpu_backend=backend, backend_info=info):
            acc.add(res)
        dt = time.perf_counter() - t0
    finally:
        plan.close()
    return n, dt, acc, info


def run_model_only(model, shapes, device, args, backend="eager"):
    import torch

    from napari_dynaclr.model.fast_cpu import choose_backend
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
        run = None
        for shape in shapes:
            if shape not in cache:
                cache[shape] = torch.randn(shape, generator=g)
            x = cache[shape].to(device)
            if true_dtype is not None:
                x = x.to(true_dtype)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            if run is None:  # chosen (and, for OpenVINO, converted) inside the timed region, as in a run
                run = choose_backend(model, device, args.precision, backend, example=x).model
            f, p = run(x)
            f.float().cpu().numpy(), p.float().cpu().numpy()  # same sync point as predict_batches
            n += shape[0]
        dt = time.perf_counter() - t0
    return n, dt


def batch_shapes(cfg, n_cells: int, k: int | None):
    b = cfg.batch_size
    sizes = [min(b, n_cells - s) for s in range(0, n_cells, b)]
    if k is not None:
        sizes = sizes[:k]
    py, px = cfg.source.patch_size
    return [(s, len(cfg.source.source_channel), cfg.source.z_depth, py, px) for s in sizes]


def med(xs):
    return statistics.median(xs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=4000, help="plate size (default 4000: the issue's plate)")
    p.add_argument("--kind", choices=("2d", "3d"), default="2d", help="benchmark plate (3d: VisCy's reference shape)")
    p.add_argument("--plate-dir", type=Path, help="reuse/create the plate here (default: a temp folder)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--patch", type=int, default=160)
    p.add_argument("--precision", default="32-true", help="32-true, bf16-mixed, 16-mixed (cuda)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--loader-threads", type=int, default=2)
    p.add_argument("--torch-threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--backends", default="eager",
                   help="comma-separated cpu_backend values measured side by side: eager, auto, openvino, onednn")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model-batches", type=int, help="limit model-only and batches to the first K batches")
    p.add_argument("--skip-model", action="store_true", help="data path only")
    p.add_argument("--skip-batches", action="store_true", help="no model-only / batches phases")
    p.add_argument("--pipeline", action="store_true", help="also the whole CLI run per backend (fresh process)")
    p.add_argument("--before-src", type=Path,
                   help="with --pipeline: also run the pipeline from this src folder (label 'before'), e.g. "
                        "`git archive <commit> src | tar -x -C /tmp/before` then /tmp/before/src")
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
        info = make_bench_plate(plate_dir, args.cells, kind=args.kind)
        print(f"generated {info['cells']} cells in {info['fovs']} FOVs ({args.kind}) at {plate_dir} "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
    cfg = make_config(plate_dir, args)
    device = args.device
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]

    res: dict = {"data": [], "rss_data": [], "rss_before_data": []}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} threads {torch.get_num_threads()}, load {os.getloadavg()}", flush=True)
    model = None if args.skip_model else make_model(args.kind)
    yml = write_predict_yml(plate_dir, args, model) if args.pipeline and model is not None else None
    n_cells = None
    for r in range(args.repeats):
        with PeakRSS() as m:
            n_cells, dt, _, _ = run_stream(cfg, NullModel(), device, args)
        res["data"].append(n_cells / dt)
        res["rss_data"].append(m.peak)
        res["rss_before_data"].append(m.start)
        print(f"[{r + 1}] data path: {n_cells} cells in {dt:.2f} s = {n_cells / dt:,.0f} cells/s, "
              f"peak RSS {m.peak / 2**20:,.0f} MiB (at start {m.start / 2**20:,.0f}); load {os.getloadavg()[0]:.2f}",
              flush=True)
        if model is None:
            continue
        for b in backends if not args.skip_batches else []:
            with PeakRSS() as m:
                n, dt = run_model_only(model, batch_shapes(cfg, n_cells, args.model_batches), device, args, b)
            res.setdefault(f"model[{b}]", []).append(n / dt)
            res.setdefault(f"rss_model[{b}]", []).append(m.peak)
            print(f"[{r + 1}] model only ({b}): {n} cells in {dt:.2f} s = {n / dt:,.1f} cells/s; "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
            with PeakRSS() as m:
                n, dt, _, info = run_stream(cfg, model, device, args, batches=args.model_batches, backend=b)
            res.setdefault(f"batches[{b}]", []).append(n / dt)
            res.setdefault(f"rss_batches[{b}]", []).append(m.peak)
            print(f"[{r + 1}] batches ({b} -> {info.get('backend')}): {n} cells in {dt:.2f} s = {n / dt:,.1f} cells/s, "
                  f"peak RSS {m.peak / 2**20:,.0f} MiB; max |Δ| vs eager on first cells {info.get('probe_max_abs')}; "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
        for b in ((["before"] if args.before_src else []) + backends) if yml is not None else []:
            dt, peak, cpu, tail = run_pipeline(yml, b, args)
            res.setdefault(f"pipeline[{b}]", []).append(n_cells / dt)
            res.setdefault(f"pipeline_s[{b}]", []).append(dt)
            res.setdefault(f"pipeline_cpu_ms_per_cell[{b}]", []).append(1000 * cpu / n_cells)
            res.setdefault(f"rss_pipeline[{b}]", []).append(peak)
            print(f"[{r + 1}] whole pipeline ({b}): {n_cells} cells in {dt:.1f} s = {n_cells / dt:,.1f} cells/s, "
                  f"{1000 * cpu / n_cells:,.1f} ms CPU per cell, child peak RSS {peak / 2**20:,.0f} MiB; "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
            for line in tail:
                print(f"      {line}", flush=True)

    summary = {
        "cells": n_cells,
        "kind": args.kind,
        "device": device,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "loader_threads": args.loader_threads,
        "torch_threads": torch.get_num_threads(),
        "model_batches": args.model_batches,
        "backends": backends,
        "repeats": args.repeats,
        "loadavg_end": os.getloadavg(),
        "data_cells_per_s": med(res["data"]),
        "peak_rss_data_mib": med(res["rss_data"]) / 2**20,
        "max_rss_mib": max_rss_bytes() / 2**20,
        "runs": res,
    }
    print(f"\n== median of {args.repeats} ({n_cells} cells, {args.kind} plate, {device}, {args.precision}, "
          f"batch {args.batch_size}, {args.loader_threads} loader threads, torch threads {torch.get_num_threads()}) ==")
    print(f"data path              {summary['data_cells_per_s']:>10,.0f} cells/s   "
          f"(peak RSS {summary['peak_rss_data_mib']:,.0f} MiB)")
    for b in (["before"] if args.before_src else []) + backends:
        for key, label in (("model", "model only"), ("batches", "batches"), ("pipeline", "whole pipeline")):
            if f"{key}[{b}]" in res:
                v = med(res[f"{key}[{b}]"])
                summary[f"{key}_cells_per_s[{b}]"] = v
                rss = res.get(f"rss_{key}[{b}]")
                extra = f"   (peak RSS {med(rss) / 2**20:,.0f} MiB)" if rss and key != "model" else ""
                ratio = ""
                base = "before" if args.before_src and key == "pipeline" else backends[0]
                if b != base and f"{key}[{base}]" in res:
                    pairs = zip(res[f"{key}[{b}]"], res[f"{key}[{base}]"], strict=True)
                    summary[f"{key}_ratio[{b}/{base}]"] = r_ = med([x / y for x, y in pairs])
                    ratio = f"   {r_:.2f}x {base} (median of paired runs)"
                print(f"{label + ' (' + b + ')':<22} {v:>10,.1f} cells/s{extra}{ratio}")
                if key == "pipeline":
                    cpu = res[f"pipeline_cpu_ms_per_cell[{b}]"]
                    summary[f"pipeline_cpu_ms_per_cell[{b}]"] = med(cpu)
                    ratio = ""
                    if b != base and f"pipeline_cpu_ms_per_cell[{base}]" in res:
                        pairs = zip(res[f"pipeline_cpu_ms_per_cell[{base}]"], cpu, strict=True)
                        summary[f"pipeline_cpu_ratio[{b}/{base}]"] = r_ = med([x / y for x, y in pairs])
                        ratio = f"   {r_:.2f}x less CPU than {base}"
                    print(f"{'':<22} {med(cpu):>10,.1f} ms CPU per cell{ratio}")
    print(f"process max RSS {summary['max_rss_mib']:,.0f} MiB; load average {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=float))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
