"""The single-device backend: the model over a plan's batches on one CPU or GPU, in order, streaming."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from napari_dynaclr.errors import Cancelled, ConfigError
from napari_dynaclr.predict.batches import check_embeddings, read_ahead
from napari_dynaclr.predict.events import BatchResult
from napari_dynaclr.predict.plan import PredictionPlan


def resolve_device(device: str | None = "auto") -> str:
    import torch

    device = (device or "auto").lower()
    if device in ("auto", "gpu"):
        if torch.cuda.is_available():
            return "cuda"
        if device == "gpu":
            raise ConfigError("device 'gpu' requested but CUDA is not available")
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    if device.startswith("cuda:"):
        index = device.split(":", 1)[1]
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} does not exist: this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 … cuda:N-1)")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' requested but Apple's MPS is not available on this machine; "
                          "use auto, cpu or cuda")
    if device.startswith("cuda") or device in ("cpu", "mps"):
        return device
    raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def _precision_context(precision: str, device: str):
    import torch

    dev_type = device.split(":")[0]
    if precision == "bf16-mixed":
        return torch.autocast(dev_type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        if dev_type == "cpu":
            raise ConfigError("precision 16-mixed needs a GPU; use bf16-mixed or 32-true on CPU")
        return torch.autocast(dev_type, dtype=torch.float16)
    return contextlib.nullcontext()


def predict_batches(
    plan: PredictionPlan,
    model,
    device: str = "auto",
    precision: str | None = None,
    loader_threads: int | None = None,
    prefetch: int = 2,
    cancel: threading.Event | None = None,
    batches: list[int] | None = None,
    channels_last: bool = False,
    cpu_backend: str | None = None,
    backend_info: dict | None = None,
) -> Iterator[BatchResult]:
    """Run *model* over the plan's batches (or the given batch indices), yielding results in order.

    Batches are read and normalised ``prefetch`` ahead by ``loader_threads`` threads. Setting *cancel*
    stops between batches with :class:`Cancelled`; closing the generator also stops cleanly. A batch with
    NaN/Inf embeddings raises :class:`~napari_dynaclr.predict.batches.NonfiniteEmbeddings` unless the
    plan's config has ``allow_nonfinite``.

    *cpu_backend* (default: the plan's config's, else ``"auto"``) chooses the CPU encoder kernels
    (:mod:`napari_dynaclr.model.fast_cpu`): ``auto`` runs fused oneDNN ConvNeXt blocks on a float32 CPU run,
    or the encoder compiled by OpenVINO when it is installed and the run has at least
    ``fast_cpu.OPENVINO_MIN_CELLS`` cells, checked against the eager model on the first
    cells of the first batch (eager again beyond ``PROBE_TOL``); ``eager`` is plain PyTorch; ``openvino``
    and ``onednn`` require that backend. *backend_info*, when
    given, receives ``backend``, ``reason`` and ``probe_max_abs``.
    """
    import torch

    from napari_dynaclr.model.fast_cpu import check_first_batch, choose_backend

    dev = resolve_device(device)
    precision = precision or plan.config.precision
    true_dtype = {"bf16-true": torch.bfloat16, "16-true": torch.float16}.get(precision)
    model = model.to(dev).eval()
    if true_dtype is not None:
        model = model.to(true_dtype)
    if channels_last:  # 2-D convolutions only: the 3-D stem's 5-D weight has no channels_last layout
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.to(memory_format=torch.channels_last)
    backend = cpu_backend or getattr(plan.config, "cpu_backend", None) or "auto"
    choice = None  # chosen on the first batch (OpenVINO needs its shape)
    order = list(range(plan.n_batches)) if batches is None else list(batches)
    pin = dev.startswith("cuda")
    threads = max(1, loader_threads or plan.config.num_workers)
    t0 = time.perf_counter()
    batches_in = read_ahead(plan, order, threads, prefetch, pin_memory=pin)
    try:
        with torch.inference_mode(), _precision_context(precision, dev):
            for i, x in batches_in:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("prediction cancelled")
                x = x.to(dev, non_blocking=pin)
                if true_dtype is not None:
                    x = x.to(true_dtype)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last_3d)
                if choice is None:
                    n_cells = sum(stop - start for start, stop in map(plan.batch_bounds, order))
                    choice = choose_backend(model, dev, precision, backend, example=x, n_cells=n_cells)
                    _record(backend_info, choice)
                out = choice.model(x)
                if choice.eager is not None:  # first batch of the fused model: checked against eager
                    choice, out = check_first_batch(choice, x, out)
                    _record(backend_info, choice)
                feats, projs = out
                start, stop = plan.batch_bounds(i)
                feats, projs = feats.float().cpu().numpy(), projs.float().cpu().numpy()
                check_embeddings(plan, start, feats, projs, f"batch {i}")  # NaN/Inf: refused unless allowed
                yield BatchResult(
                    index=i,
                    start=start,
                    stop=stop,
                    features=feats,
                    projections=projs,
                    n_batches=plan.n_batches,
                    n_cells=plan.n_cells,
                    elapsed=time.perf_counter() - t0,
                )
    finally:
        batches_in.close()


def _record(info: dict | None, choice) -> None:
    if info is not None:
        info.update(backend=choice.backend, reason=choice.reason, probe_max_abs=choice.probe_max_abs,
                    setup_seconds=choice.setup_seconds)
