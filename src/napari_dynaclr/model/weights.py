"""Deterministic weights (the conformance cases' recipe) for tests and the offline demo."""

from __future__ import annotations

import math

import torch

from napari_dynaclr.core.architecture import EncoderConfig
from napari_dynaclr.model.checkpoint import PREFIX
from napari_dynaclr.model.encoder import ContrastiveEncoder


def deterministic_tensor(salt: str, key: str, shape: tuple[int, ...]):
    """Implementation-independent weights: a pure function of (salt, key, shape).

    Same recipe as the conformance kit's ``weights.py`` so tests can rebuild its checkpoints.
    """
    import zlib

    import numpy as np

    name = key.rsplit(".", 1)[-1]
    if name == "num_batches_tracked":
        return np.array(1000, dtype=np.int64)
    u = np.random.default_rng(zlib.crc32(f"{salt}/{key}".encode())).random(shape)
    s = 2.0 * u - 1.0
    if name == "running_mean":
        v = 0.1 * s
    elif name == "running_var":
        v = 0.5 + u
    elif name == "gamma":
        v = 0.5 + 0.25 * s
    elif name == "weight" and len(shape) == 1:
        v = 1.0 + 0.2 * s
    elif name == "bias":
        v = 0.05 * s
    else:
        v = s * math.sqrt(3.0 / math.prod(shape[1:]))
    return v.astype(np.float32)


def deterministic_encoder(cfg: EncoderConfig, salt: str) -> ContrastiveEncoder:
    """A ContrastiveEncoder whose weights are :func:`deterministic_tensor` values (eval mode)."""
    model = ContrastiveEncoder(cfg)
    sd = {
        k: torch.from_numpy(deterministic_tensor(salt, PREFIX + k, tuple(v.shape)))
        for k, v in model.state_dict().items()
    }
    model.load_state_dict(sd, strict=True)
    return model.eval()
