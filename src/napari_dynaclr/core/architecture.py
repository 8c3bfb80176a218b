"""The encoder's architecture as data: VisCy's ``ContrastiveEncoder`` arguments, the supported timm
backbones and the patch sizes they tile. No torch here, so planning a run (and checking a predict.yml
against a checkpoint's encoder) does not load the model stack; :mod:`napari_dynaclr.model` builds the
network from these.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from napari_dynaclr.errors import ConfigError, shorten

#: backbone name -> (family, stage depths, first stage width)
BACKBONES: dict[str, tuple[str, tuple[int, ...], int]] = {
    "convnext_atto": ("convnext", (2, 2, 6, 2), 40),
    "convnext_femto": ("convnext", (2, 2, 6, 2), 48),
    "convnext_pico": ("convnext", (2, 2, 6, 2), 64),
    "convnext_nano": ("convnext", (2, 2, 8, 2), 80),
    "convnext_tiny": ("convnext", (3, 3, 9, 3), 96),
    "convnext_small": ("convnext", (3, 3, 27, 3), 96),
    "convnext_base": ("convnext", (3, 3, 27, 3), 128),
    "convnextv2_atto": ("convnextv2", (2, 2, 6, 2), 40),
    "convnextv2_femto": ("convnextv2", (2, 2, 6, 2), 48),
    "convnextv2_pico": ("convnextv2", (2, 2, 6, 2), 64),
    "convnextv2_nano": ("convnextv2", (2, 2, 8, 2), 80),
    "convnextv2_tiny": ("convnextv2", (3, 3, 9, 3), 96),
    "convnextv2_base": ("convnextv2", (3, 3, 27, 3), 128),
    "resnet18": ("resnet-basic", (2, 2, 2, 2), 64),
    "resnet34": ("resnet-basic", (3, 4, 6, 3), 64),
    "resnet50": ("resnet-bottleneck", (3, 4, 6, 3), 64),
    "resnet101": ("resnet-bottleneck", (3, 4, 23, 3), 64),
}


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """``ContrastiveEncoder`` init arguments (the names VisCy's predict.yml uses)."""

    backbone: str = "convnext_tiny"
    in_channels: int = 1
    in_stack_depth: int = 1
    stem_kernel_size: tuple[int, int, int] = (1, 4, 4)
    stem_stride: tuple[int, int, int] = (1, 4, 4)
    embedding_dim: int = 768
    projection_dim: int = 32
    drop_path_rate: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "stem_kernel_size", tuple(int(v) for v in self.stem_kernel_size))
        object.__setattr__(self, "stem_stride", tuple(int(v) for v in self.stem_stride))
        if self.backbone not in BACKBONES:
            raise ConfigError(
                f"unknown encoder backbone {self.backbone!r}; supported: {', '.join(BACKBONES)}"
            )
        if len(self.stem_kernel_size) != 3 or len(self.stem_stride) != 3:
            raise ConfigError("stem_kernel_size and stem_stride must have 3 values (z, y, x)")
        if self.in_channels < 1 or self.in_stack_depth < 1:
            raise ConfigError("in_channels and in_stack_depth must be >= 1")
        kz, sz = self.stem_kernel_size[0], self.stem_stride[0]
        if self.in_stack_depth < kz:
            raise ConfigError(
                f"in_stack_depth {self.in_stack_depth} is smaller than the stem kernel depth {kz}"
            )
        out_depth = (self.in_stack_depth - kz) // sz + 1
        width = BACKBONES[self.backbone][2]
        if width % out_depth:
            raise ConfigError(
                f"stem cannot map depth {self.in_stack_depth} with kernel {kz}/stride {sz} "
                f"({out_depth} output slices) onto {width} backbone channels"
            )

    @property
    def stem_out_depth(self) -> int:
        kz, sz = self.stem_kernel_size[0], self.stem_stride[0]
        return (self.in_stack_depth - kz) // sz + 1

    @property
    def family(self) -> str:
        return BACKBONES[self.backbone][0]

    @property
    def num_features(self) -> int:
        family, _, width = BACKBONES[self.backbone]
        if family.startswith("convnext"):
            return width * 8
        return width * 8 * (4 if family == "resnet-bottleneck" else 1)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["stem_kernel_size"] = list(self.stem_kernel_size)
        d["stem_stride"] = list(self.stem_stride)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> EncoderConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        ignored = {"pretrained"}
        unknown = set(d) - known - ignored
        if unknown:
            raise ConfigError(f"unknown encoder argument(s): {shorten(sorted(unknown))}")
        return cls(**{k: v for k, v in d.items() if k in known})


def describe_config(cfg: EncoderConfig) -> str:
    """One-line human description of an encoder config."""
    return (
        f"{cfg.backbone} (in_channels={cfg.in_channels}, in_stack_depth={cfg.in_stack_depth}, "
        f"stem {list(cfg.stem_kernel_size)}, projection_dim={cfg.projection_dim})"
    )


def patch_multiple(cfg: EncoderConfig) -> int:
    """YX sizes must be multiples of this for the stem + backbone downsampling to tile exactly."""
    stride = max(int(cfg.stem_stride[1]), int(cfg.stem_stride[2]))
    return stride * 8 if cfg.family.startswith("convnext") else stride * 16
