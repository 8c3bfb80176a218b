"""Checkpoints: read a VisCy Lightning checkpoint, infer or check the encoder config, load strictly."""

from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from napari_dynaclr.core.architecture import BACKBONES, EncoderConfig, describe_config
from napari_dynaclr.errors import CheckpointError, ConfigError, shorten
from napari_dynaclr.model.encoder import ContrastiveEncoder

PREFIX = "model."


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> EncoderConfig:
    """Infer the encoder config from a (``model.``-prefixed) state dict's shapes.

    The stem stride is assumed equal to its kernel (true for every VisCy config); the smallest
    ``in_stack_depth`` that gives the stored stem is returned.
    """
    sd = _strip_prefix(state_dict)
    if "stem.conv.weight" not in sd:
        raise CheckpointError(
            "state dict has no 'model.stem.conv.weight': not a DynaCLR ContrastiveEncoder checkpoint "
            f"(first keys: {shorten(list(state_dict), 4)})"
        )
    w = sd["stem.conv.weight"]
    if len(w.shape) != 5:
        raise CheckpointError(f"'model.stem.conv.weight' has shape {tuple(w.shape)}, expected 5 dims")
    stem_out, in_channels, kz, ky, kx = (int(v) for v in w.shape)
    if min(stem_out, in_channels, kz, ky, kx) < 1:
        raise CheckpointError(f"'model.stem.conv.weight' has shape {tuple(w.shape)}: an empty stem (a dimension "
                              "is 0); the checkpoint is corrupt")
    if "encoder.layer1.0.conv1.weight" in sd:
        bottleneck = "encoder.layer1.0.conv3.weight" in sd
        depths = tuple(_count_blocks(sd, f"encoder.layer{i}.") for i in range(1, 5))
        family = "resnet-bottleneck" if bottleneck else "resnet-basic"
        if "encoder.bn1.weight" not in sd:
            raise CheckpointError("state dict has ResNet keys ('model.encoder.layer1.0.conv1.weight') but no "
                                  "'model.encoder.bn1.weight' (the stem's batch norm): the checkpoint is incomplete or "
                                  "not a DynaCLR ResNet encoder")
        width = int(sd["encoder.bn1.weight"].shape[0])
    elif "encoder.stem.1.weight" in sd:
        family = "convnextv2" if any(".mlp.grn." in k for k in sd) else "convnext"
        depths = tuple(_count_blocks(sd, f"encoder.stages.{i}.blocks.") for i in range(4))
        width = int(sd["encoder.stem.1.weight"].shape[0])
    else:
        raise CheckpointError(
            "cannot recognise the backbone: neither ConvNeXt ('model.encoder.stem.1.weight') nor ResNet "
            "('model.encoder.layer1.0.conv1.weight') keys are present"
        )
    matches = [n for n, spec in BACKBONES.items() if spec == (family, depths, width)]
    if not matches:
        raise CheckpointError(
            f"unsupported backbone: {family} with stage depths {depths} and width {width}"
        )
    if width % stem_out:
        raise CheckpointError(
            f"stem conv has {stem_out} output channels, which does not divide the backbone width {width}"
        )
    out_depth = width // stem_out
    for key in ("projection.0.weight", "projection.3.weight"):
        if key not in sd:
            raise CheckpointError(f"state dict has no 'model.{key}' (projection head missing)")
    return EncoderConfig(
        backbone=matches[0],
        in_channels=in_channels,
        in_stack_depth=out_depth * kz,
        stem_kernel_size=(kz, ky, kx),
        stem_stride=(kz, ky, kx),
        embedding_dim=int(sd["projection.0.weight"].shape[0]),
        projection_dim=int(sd["projection.3.weight"].shape[0]),
    )


def _count_blocks(sd: Mapping, prefix: str) -> int:
    idx = {int(k[len(prefix) :].split(".", 1)[0]) for k in sd if k.startswith(prefix)}
    return max(idx) + 1 if idx else 0


def _strip_prefix(state_dict: Mapping) -> dict:
    if any(k.startswith(PREFIX) for k in state_dict):
        return {k[len(PREFIX) :]: v for k, v in state_dict.items() if k.startswith(PREFIX)}
    return dict(state_dict)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a Lightning checkpoint (or a bare state dict) and return its ``model.``-prefixed state dict.

    Both of ``torch.save``'s formats load (the zip archive, and the legacy pickle of PyTorch < 1.6), always
    with ``weights_only=True``. The file is checked first (:func:`~napari_dynaclr.core.inputs.check_input_file`):
    a named pipe, a folder or an unreadable file is one line (``permission denied``).
    """
    from napari_dynaclr.core.inputs import check_input_file, os_error

    path = check_input_file(path, "checkpoint", CheckpointError)
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
        zipped = zipfile.is_zipfile(path)
    except OSError as exc:
        raise os_error(exc, path, "checkpoint", CheckpointError) from None
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    if not zipped and head[:1] != b"\x80":  # neither torch.save's zip archive nor its legacy (< 1.6) pickle
        raise CheckpointError(f"checkpoint {path} is not a PyTorch checkpoint (neither a zip archive nor a legacy "
                              "pickle; truncated or wrong file?)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise os_error(exc, path, "checkpoint", CheckpointError) from None
    except Exception as exc:  # torch raises many types for corrupt archives
        detail = _load_error(exc)
        if "Unsupported global: GLOBAL " in detail:  # a real pickle holding objects that are not weights
            name = detail.split("GLOBAL ", 1)[1].split(" ", 1)[0]
            raise CheckpointError(f"checkpoint {path} holds a Python object ({name[:100]}) that a safe load "
                                  "(weights_only) refuses: only tensors and plain values are read; save the "
                                  "state_dict alone") from exc
        if not zipped:
            raise CheckpointError(f"checkpoint {path} is not a PyTorch checkpoint (a legacy pickle that cannot be "
                                  f"read: {detail[:150]}; truncated or wrong file?)") from exc
        raise CheckpointError(f"checkpoint {path} cannot be read: {detail[:200]}") from exc
    if isinstance(obj, Mapping) and "state_dict" in obj:
        sd = obj["state_dict"]
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj
    else:
        keys = list(obj)[:5] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"checkpoint {path} has no 'state_dict' (top-level keys: {keys})")
    if not isinstance(sd, Mapping) or not sd:
        raise CheckpointError(f"checkpoint {path} has an empty or invalid 'state_dict'")
    not_named = [k for k in sd if not isinstance(k, str)]
    if not_named:
        raise CheckpointError(f"checkpoint {path}: state_dict key {not_named[0]!r} is not a name "
                              f"({len(not_named)} such key(s)); the file is not a model's state dict")
    not_tensors = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"checkpoint {path}: {not_tensors[0]} is a {type(sd[not_tensors[0]]).__name__}, "
                              f"not a tensor ({len(not_tensors)} such value(s))")
    if not any(k.startswith(PREFIX) for k in sd):  # a bare ContrastiveEncoder state dict
        sd = {PREFIX + k: v for k, v in sd.items()}
    check_finite(sd, path)
    return dict(sd)


def _load_error(exc: BaseException) -> str:
    """The useful line of a ``torch.load`` failure: the weights-only unpickler's own error (not its long advice
    to load unsafely), else the first line."""
    text = str(exc).strip()
    if "WeightsUnpickler error:" in text:
        rest = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
        lines = [ln.strip() for ln in rest.splitlines() if ln.strip()]
        if lines:
            return lines[0]
    return text.splitlines()[0] if text else type(exc).__name__


def check_finite(state_dict: Mapping, path: str | Path = "checkpoint") -> None:
    """Refuse a state dict with NaN/Inf in any floating-point tensor (weights, biases, BatchNorm running
    statistics): every embedding computed with it would be NaN or meaningless. Names the first bad key, its
    count and how many other tensors are affected."""
    bad: list[tuple[str, int, int]] = []
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor) or not (value.is_floating_point() or value.is_complex()):
            continue
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            bad.append((key, int((~finite).sum()), value.numel()))
    if bad:
        key, n, total = bad[0]
        more = f"; {len(bad) - 1} more tensor(s) too: {shorten([b[0] for b in bad[1:]], 3)}" if len(bad) > 1 else ""
        raise CheckpointError(
            f"checkpoint {path}: tensor {key} has {n} NaN/Inf value(s) of {total}{more}; "
            "the weights are corrupt (or training diverged)"
        )


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"):
    """Strict key and shape check with a message listing missing/unexpected/mismatched keys by name."""
    expected = {PREFIX + k: v for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {shorten(missing, 3)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {shorten(unexpected, 3)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es) (checkpoint vs model): {shorten(shapes, 2)}")
    if problems:
        cfg = getattr(model, "config", None)
        what = f"the {cfg.backbone} encoder" if cfg else "the encoder"
        raise CheckpointError(f"{source} does not fit {what}: " + "; ".join(problems))


@dataclasses.dataclass
class LoadedModel:
    model: ContrastiveEncoder
    config: EncoderConfig
    inferred: bool
    path: Path
    n_parameters: int


def load_checkpoint(path: str | Path, config: EncoderConfig | Mapping | None = None) -> LoadedModel:
    """Load a VisCy DynaCLR checkpoint strictly into a :class:`ContrastiveEncoder` in eval mode.

    Without *config* the encoder config is inferred from the state-dict shapes; an explicit config
    is checked against them (a mismatch names the contradicting keys).
    """
    return model_from_state_dict(read_state_dict(path), config, path)


def resolve_config(state_dict: Mapping, config: EncoderConfig | Mapping | None) -> EncoderConfig:
    """The explicit config (checked against the weights' shapes) or the one inferred from them.

    Cheap: a model is built only when the explicit config disagrees with the shapes, to name the keys.
    """
    if config is None:
        return infer_config(state_dict)
    cfg = config if isinstance(config, EncoderConfig) else EncoderConfig.from_dict(config)
    guess = infer_config(state_dict)

    def shape_key(c: EncoderConfig):
        return (c.backbone, c.in_channels, c.stem_kernel_size, c.stem_out_depth, c.embedding_dim, c.projection_dim)

    if shape_key(cfg) != shape_key(guess):
        model_from_state_dict(state_dict, cfg)  # raises with the mismatching keys named
    return cfg


def model_from_state_dict(sd: Mapping, config: EncoderConfig | Mapping | None = None,
                          path: str | Path = "checkpoint") -> LoadedModel:
    """Build the encoder for *config* (or the inferred one) and load *sd* strictly; eval mode."""
    inferred = config is None
    if inferred:
        cfg = infer_config(sd)
    else:
        cfg = config if isinstance(config, EncoderConfig) else EncoderConfig.from_dict(config)
    model = ContrastiveEncoder(cfg)
    try:
        check_state_dict(model, sd, source=f"checkpoint {Path(path).name}")
    except CheckpointError as exc:
        if not inferred:
            try:
                guess = infer_config(sd)
                if guess != cfg:
                    exc = ConfigError(f"{exc}; the weights look like {describe_config(guess)}, "
                                      f"not {describe_config(cfg)}")
            except CheckpointError:
                pass
        raise exc from None
    model.load_state_dict(_strip_prefix(sd), strict=True)
    model.eval()
    n = sum(p.numel() for p in model.parameters())
    return LoadedModel(model=model, config=cfg, inferred=inferred, path=Path(path), n_parameters=n)


def save_checkpoint(model: ContrastiveEncoder, path: str | Path) -> None:
    """Save a minimal Lightning-format checkpoint VisCy can load (keys prefixed ``model.``)."""
    sd = {PREFIX + k: v for k, v in model.state_dict().items()}
    torch.save(
        {"state_dict": sd, "pytorch-lightning_version": "2.6.6", "epoch": 0, "global_step": 0}, path
    )
