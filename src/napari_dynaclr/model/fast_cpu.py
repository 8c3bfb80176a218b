"""Exact, faster CPU inference for the ConvNeXt encoder: fused oneDNN blocks in channels_last.

A timm ConvNeXt block (``conv_mlp=False``) computes
``x + γ ⊙ fc2(GELU(fc1(LN(dwconv7(x)))))``. Eager PyTorch on CPU spends about half of a forward outside
the two matmuls: NCHW ↔ NHWC copies around the LayerNorm, a separate GELU pass, the γ multiply and the
residual add. Its float32 matmuls also go through MKL's sgemm, which on AMD processors runs ≈ 1.4× slower
than oneDNN's (measured here: 60 – 67 against 85 – 109 GFLOP/s on the stage shapes).

:class:`FusedConvNeXtEncoder` computes the same function with the same float32 weights:

* (a ``conv_mlp`` block's 1x1 convolutions are the same matmuls and are fused the same way);
* the whole 2-D body runs in channels_last, so every NCHW ↔ NHWC permute is a view, never a copy;
* ``fc1`` + GELU (erf, as eager) is one oneDNN matmul with an eltwise post-op;
* γ is folded into ``fc2`` (``W2' = γ ⊙ W2``, ``b2' = γ ⊙ b2``) and the residual add is the matmul's binary
  post-op, so ``fc2`` + γ + add is one pass.

The results differ from eager only by float32 rounding (≈ 1e-7 relative). That is checked on every run:
:func:`FirstBatchCheck` compares the fused model's first batch with the eager model on its first cells and
falls back to eager (with a warning) if the deviation exceeds :data:`PROBE_TOL`. ``cpu_backend="eager"``
turns the fused path off; ``"onednn"`` requires it (an error instead of a fallback).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from napari_dynaclr.core.config import check_cpu_backend
from napari_dynaclr.errors import ConfigError

#: largest accepted max |Δ| between the fused and the eager model on the probe cells, times max(1, max |eager|)
PROBE_TOL = 1e-5
#: cells of the first batch re-run through the eager model to check the fused one
PROBE_CELLS = 2


def _ops_available() -> bool:
    ops = getattr(torch.ops, "mkldnn", None)
    return (
        torch.backends.mkldnn.is_available()
        and ops is not None
        and hasattr(ops, "_linear_pointwise")
        and hasattr(ops._linear_pointwise, "binary")
    )


def _is_exact_gelu(act) -> bool:
    name = type(act).__name__
    if isinstance(act, nn.GELU):
        return act.approximate == "none"
    return name == "GELU" and type(act).__module__.startswith("timm.")  # timm's GELU: F.gelu (erf)


def why_not_fusable(model) -> str | None:
    """None when *model* is a :class:`ContrastiveEncoder` with plain timm ConvNeXt blocks; else the reason."""
    from napari_dynaclr.model.encoder import ContrastiveEncoder

    if not isinstance(model, ContrastiveEncoder):
        return f"the model is a {type(model).__name__}, not a ContrastiveEncoder"
    if not model.config.family.startswith("convnext"):
        return f"the backbone {model.config.backbone} is not a ConvNeXt"
    try:
        from timm.layers import Mlp
        from timm.models.convnext import ConvNeXtBlock
    except ImportError:  # pragma: no cover - timm is a dependency
        return "timm's ConvNeXtBlock is not importable"
    enc = model.encoder
    if not isinstance(getattr(enc, "norm_pre", None), nn.Identity):
        return "the backbone has a pre-head norm"
    for stage in enc.stages:
        for blk in stage.blocks:
            if not isinstance(blk, ConvNeXtBlock):
                return "a block is not a timm ConvNeXt block"
            mlp = blk.mlp
            if type(mlp) is not Mlp or not all(_is_dense(getattr(mlp, n, None)) for n in ("fc1", "fc2")):
                return "a block's MLP is not Linear-GELU-Linear (e.g. ConvNeXt-V2's GRN)"
            if not _is_exact_gelu(mlp.act) or not isinstance(mlp.norm, nn.Identity):
                return "a block's MLP has another activation or a norm"
            if not isinstance(blk.shortcut, nn.Identity) or type(blk.norm).__name__ not in ("LayerNorm", "LayerNorm2d"):
                return "a block has a projection shortcut or another norm"
    return None


def _is_dense(layer) -> bool:
    """A Linear, or the 1x1 Conv2d of a ``conv_mlp`` block (the same matmul), with a bias."""
    if isinstance(layer, nn.Linear):
        return layer.bias is not None
    return (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and layer.stride == (1, 1)
            and layer.padding == (0, 0) and layer.dilation == (1, 1) and layer.groups == 1 and layer.bias is not None)


def _matrix(layer) -> torch.Tensor:
    w = layer.weight.detach()
    return w.reshape(w.shape[0], w.shape[1])


class FusedConvNeXtBlock(nn.Module):
    """One ConvNeXt block, inference only, on channels_last tensors (see the module docstring)."""

    def __init__(self, blk):
        super().__init__()
        self.conv_dw = blk.conv_dw  # shared with the eager model
        self.norm = blk.norm
        fc1, fc2 = blk.mlp.fc1, blk.mlp.fc2
        self.register_buffer("w1", _matrix(fc1), persistent=False)  # shares the eager weight's storage
        self.register_buffer("b1", fc1.bias.detach(), persistent=False)
        w2, b2 = _matrix(fc2), fc2.bias.detach()
        if blk.gamma is not None:
            g = blk.gamma.detach()
            w2, b2 = w2 * g[:, None], b2 * g
        self.register_buffer("w2", w2.contiguous(), persistent=False)
        self.register_buffer("b2", b2.contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)  # a no-op inside the fused body
        y = self.conv_dw(x).permute(0, 2, 3, 1)  # NHWC view
        y = F.layer_norm(y, self.norm.normalized_shape, self.norm.weight, self.norm.bias, self.norm.eps)
        y = torch.ops.mkldnn._linear_pointwise(y, self.w1, self.b1, "gelu", [], "none")
        y = torch.ops.mkldnn._linear_pointwise.binary(y, x.permute(0, 2, 3, 1), self.w2, self.b2, "add")
        return y.permute(0, 3, 1, 2)  # channels_last NCHW view


class FusedConvNeXtEncoder(nn.Module):
    """The :class:`ContrastiveEncoder` with fused blocks; everything else is the eager model's own modules."""

    def __init__(self, model):
        super().__init__()
        self.config = model.config
        self.stem = model.stem
        enc = model.encoder
        self.backbone_stem = enc.stem
        self.downsample = nn.ModuleList([stage.downsample for stage in enc.stages])
        self.blocks = nn.ModuleList(
            [nn.Sequential(*[FusedConvNeXtBlock(b) for b in stage.blocks]) for stage in enc.stages]
        )
        self.norm_pre = enc.norm_pre
        self.head = enc.head
        self.projection = model.projection

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.backbone_stem(self.stem(x))
        for down, blocks in zip(self.downsample, self.blocks, strict=True):
            x = blocks(down(x).contiguous(memory_format=torch.channels_last))
        features = self.head(self.norm_pre(x))
        return features, self.projection(features)


# auto runs OpenVINO from this much work on (cells of 160 x 160 px; smaller patches count in proportion to their
# area): its conversion takes ≈ 2 s (≈ 5 s on a loaded 2-core machine) and it saves ≈ 11 ms of CPU per 160-px
# cell against the fused oneDNN blocks (docs/performance.md), so it repays itself from a few hundred such cells;
# below, the oneDNN blocks (no set-up) are as fast
OPENVINO_MIN_CELLS = 1000


def _work(n_cells: int, example: torch.Tensor) -> float:
    """*n_cells* in cells of 160 x 160 px (the encoder's cost grows with the patch area)."""
    return n_cells * example.shape[-2] * example.shape[-1] / 160**2


@dataclasses.dataclass
class BackendChoice:
    """What :func:`choose_backend` decided: the model to run and why."""

    model: nn.Module
    backend: str  # "openvino", "onednn" or "eager"
    reason: str
    eager: nn.Module | None = None  # the eager model, kept for the first-batch check
    probe_max_abs: float | None = None
    strict: bool = False  # an explicit cpu_backend: a failed check is an error, not a fallback
    setup_seconds: float = 0.0  # building the faster model (OpenVINO: conversion + compilation)


def openvino_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


class OpenVinoEncoder:
    """The encoder converted to OpenVINO (from the PyTorch module directly, no ONNX file) and compiled for
    the CPU at float32 (``INFERENCE_PRECISION_HINT f32``: OpenVINO would otherwise pick bf16 on CPUs with
    bf16 instructions), with a dynamic batch dimension. Called like the model: ``(features, projections)``.

    Throughput mode: one stream per thread, each running its share of the batch single-threaded (an
    ``AsyncInferQueue``), instead of every thread working on the whole batch together. The cells' results
    are the same bits either way (checked: max |Δ| 0 on the 2-D and 3-D benchmark encoders); it needs
    5–10 % less CPU per cell, and threads that never wait for each other do not stall when another process
    takes a core (on the loaded 2-core machine: 23–25 against 11–16 cells/s, 2-D encoder)."""

    def __init__(self, model, example: torch.Tensor, threads: int | None = None):
        import openvino as ov

        shape = list(example.shape[1:])
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace's deprecation, inside OpenVINO
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            converted = ov.convert_model(model, example_input=torch.zeros([1, *shape]),
                                         input=[ov.PartialShape([-1, *shape])])
        threads = max(1, int(threads or torch.get_num_threads()))
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": threads,
                  "INFERENCE_NUM_THREADS": threads}
        self.compiled = ov.Core().compile_model(converted, "CPU", config)
        self.streams = max(1, int(self.compiled.get_property("NUM_STREAMS")))
        self.queue = ov.AsyncInferQueue(self.compiled, self.streams)
        self.queue.set_callback(self._collect)
        self._parts: dict[int, list] = {}
        self.config = model.config

    def _collect(self, request, index: int) -> None:
        self._parts[index] = [np.array(t.data, dtype=np.float32, copy=True) for t in request.output_tensors]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        arr = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        parts = np.array_split(arr, min(self.streams, len(arr))) if len(arr) else [arr]
        self._parts = {}
        for i, part in enumerate(parts):
            self.queue.start_async([part], i)
        self.queue.wait_all()
        return tuple(torch.from_numpy(np.concatenate([self._parts[i][k] for i in range(len(parts))]))
                     for k in range(2))


def choose_backend(model, device: str, precision: str, cpu_backend: str = "auto",
                   example: torch.Tensor | None = None, n_cells: int | None = None) -> BackendChoice:
    """The fastest exact CPU model that applies: OpenVINO (when installed), else fused oneDNN blocks (a
    ConvNeXt encoder), else eager. Only float32 runs on the CPU are accelerated. *example* (a batch) gives
    OpenVINO its input shape; without it OpenVINO is skipped. *n_cells*: the run's size; ``auto`` skips
    OpenVINO below :data:`OPENVINO_MIN_CELLS` cells of 160 x 160 px, where its conversion (≈ 2–5 s) costs
    more than it saves.

    An explicit ``cpu_backend`` (``"openvino"``, ``"onednn"``) raises :class:`ConfigError` where it does not apply.
    """
    import time

    check_cpu_backend(cpu_backend)
    if cpu_backend == "eager":
        return BackendChoice(model, "eager", "cpu_backend eager")
    strict = cpu_backend != "auto"
    common = None
    if not str(device).startswith("cpu"):
        common = f"device {device} is not the CPU"
    elif precision not in ("32-true", "32"):
        common = f"precision {precision} is not float32"
    if cpu_backend in ("auto", "openvino") and common is None:
        reason = None
        from napari_dynaclr.model.encoder import ContrastiveEncoder

        if not openvino_available():
            reason = "openvino is not installed (pip install openvino)"
        elif not isinstance(model, ContrastiveEncoder):
            reason = f"the model is a {type(model).__name__}, not a ContrastiveEncoder"
        elif example is None:
            reason = "no example batch"
        elif not strict and n_cells is not None and _work(n_cells, example) < OPENVINO_MIN_CELLS:
            reason = (f"{n_cells} cells of {example.shape[-2]} x {example.shape[-1]} px: less work than the "
                      f"{OPENVINO_MIN_CELLS} cells of 160 x 160 px that repay OpenVINO's conversion")
        else:
            t0 = time.perf_counter()
            try:
                ov_model = OpenVinoEncoder(model, example)
            except Exception as err:  # noqa: BLE001 - any conversion failure: the next backend
                if strict:
                    raise ConfigError(f"cpu_backend openvino failed to convert the model: {err}") from err
                warnings.warn(f"OpenVINO could not convert the encoder ({err}); using the next CPU backend",
                              stacklevel=2)
            else:
                return BackendChoice(ov_model, "openvino", "OpenVINO CPU, float32", eager=model, strict=strict,
                                     setup_seconds=time.perf_counter() - t0)
        if cpu_backend == "openvino":
            raise ConfigError(f"cpu_backend openvino is not available: {reason}; use auto or eager")
    reason = common
    if reason is None and not _ops_available():
        reason = "this torch build has no oneDNN fused linear ops"
    if reason is None:
        reason = why_not_fusable(model)
    if reason is not None:
        if strict:
            raise ConfigError(f"cpu_backend {cpu_backend} is not available: {reason}; use auto or eager")
        return BackendChoice(model, "eager", reason)
    t0 = time.perf_counter()
    fused = FusedConvNeXtEncoder(model).eval()
    return BackendChoice(fused, "onednn", "fused ConvNeXt blocks (oneDNN, channels_last)", eager=model,
                         strict=strict, setup_seconds=time.perf_counter() - t0)


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| over the entries finite in both; inf when the NaN/Inf patterns differ."""
    fa, fb = torch.isfinite(a), torch.isfinite(b)
    if not torch.equal(fa, fb) or not torch.equal(torch.isnan(a), torch.isnan(b)):
        return float("inf")
    if not bool(fa.any()):
        return 0.0
    return float((a[fa] - b[fb]).abs().max())


def check_first_batch(choice: BackendChoice, x: torch.Tensor, out: tuple[torch.Tensor, torch.Tensor]):
    """Compare the fused model's output *out* on the first batch *x* with the eager model on its first
    :data:`PROBE_CELLS` cells. Within :data:`PROBE_TOL` (relative to max(1, max |eager|)) the fused model is
    kept and *out* returned; beyond, the batch is recomputed eagerly and the run continues eagerly (with a
    warning), or :class:`ConfigError` for an explicit ``cpu_backend="onednn"``. Returns ``(choice, out)``."""
    if choice.eager is None:
        return choice, out
    k = min(PROBE_CELLS, x.shape[0])
    ref = choice.eager(x[:k])
    delta = max(_max_abs_diff(o[:k].float(), r.float()) for o, r in zip(out, ref, strict=True))
    scale = max([1.0] + [float(r[torch.isfinite(r)].abs().max()) for r in ref if bool(torch.isfinite(r).any())])
    choice.probe_max_abs = delta
    if delta <= PROBE_TOL * scale:
        choice.eager = None
        return choice, out
    msg = (f"the {choice.backend} encoder deviates by max |Δ| {delta:.2e} from the eager model on the first cells "
           f"(tolerance {PROBE_TOL * scale:.1e})")
    if choice.strict:
        raise ConfigError(msg + "; use cpu_backend auto or eager")
    warnings.warn(msg + "; continuing with the eager model", stacklevel=3)
    eager = choice.eager
    return BackendChoice(eager, "eager", msg, probe_max_abs=delta), eager(x)
