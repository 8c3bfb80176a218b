"""DynaCLR contrastive encoder (VisCy's ``ContrastiveEncoder``).

The module tree reproduces VisCy's state-dict keys and shapes exactly (``stem.conv``, ``encoder.*`` = a
timm backbone without its first stem conv and classifier, ``projection.{0,1,3,4}``), so VisCy Lightning
checkpoints (keys prefixed ``model.``) load strictly. Weights are never downloaded.
"""

from __future__ import annotations

import torch
from torch import nn

from napari_dynaclr.core.architecture import EncoderConfig


class StemDepthToChannels(nn.Module):
    """3D conv stem whose output depth is folded into channels (VisCy ``StemDepthtoChannels``)."""

    def __init__(self, cfg: EncoderConfig, out_channels: int):
        super().__init__()
        stem_out = out_channels // cfg.stem_out_depth
        self.conv = nn.Conv3d(cfg.in_channels, stem_out, cfg.stem_kernel_size, cfg.stem_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        b, c, d, h, w = x.shape
        return x.reshape(b, c * d, h, w)  # channel-major, depth-minor, as VisCy


class ContrastiveEncoder(nn.Module):
    """stem → timm backbone (no first conv, no classifier) → projection MLP.

    ``forward(x)`` with ``x`` of shape (B, C, Z, Y, X) returns ``(features, projections)``.
    """

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        import timm  # lazy: heavy

        self.config = cfg
        encoder = timm.create_model(
            cfg.backbone,
            pretrained=False,
            features_only=False,
            drop_path_rate=cfg.drop_path_rate,
            num_classes=cfg.embedding_dim,
        )
        if cfg.family.startswith("convnext"):
            width = encoder.stem[0].out_channels
            encoder.stem[0] = nn.Identity()
            encoder.head.fc = nn.Identity()
        else:
            width = encoder.conv1.out_channels
            encoder.conv1 = nn.Identity()
            encoder.fc = nn.Identity()
        self.stem = StemDepthToChannels(cfg, width)
        self.encoder = encoder
        self.projection = nn.Sequential(
            nn.Linear(encoder.num_features, cfg.embedding_dim),
            nn.BatchNorm1d(cfg.embedding_dim),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.embedding_dim, cfg.projection_dim),
            nn.BatchNorm1d(cfg.projection_dim),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(self.stem(x))
        return features, self.projection(features)
