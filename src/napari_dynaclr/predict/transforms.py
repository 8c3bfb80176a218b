"""The normalisations applied to a batch, as VisCy's transforms compute them (float32, the same torch ops in
the same order, hence bit-identical): ``NormalizeSampled`` and ``MinMaxSampled`` from each FOV's
statistics, MONAI's ``ScaleIntensityRangePercentilesd`` pooled over the whole batch, and the fused
``(x - subtrahend) / (divisor + 1e-8)`` form the patch reader applies while cropping.

The normalisation settings and statistics are in :mod:`napari_dynaclr.core.normalize` (no torch); this
module imports torch when it runs.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from napari_dynaclr.core.normalize import NormalizeSampled, ScaleIntensityRangePercentiles, StatsTable
from napari_dynaclr.core.percentile import percentiles
from napari_dynaclr.errors import ConfigError


@dataclasses.dataclass
class SampledAffine:
    """Per-cell, per-channel ``(x - sub) / div`` (``div`` already includes VisCy's ``+ 1e-8``), then the
    batch-pooled percentile scaling of the channels in *pooled*.

    ``sub`` and ``div`` are float32 arrays of shape ``(B, C)``; an identity channel has ``sub = 0``,
    ``div = 1`` (both exact in float32). *pooled*: ``(channel index, ScaleIntensityRangePercentiles)`` pairs,
    applied in place by :func:`scale_pooled` once the whole batch is cropped.
    """

    sub: np.ndarray
    div: np.ndarray
    pooled: tuple = ()


def sampled_affine(norms, source_channel, stats, fov_index, t) -> SampledAffine | None:
    """The fused form of *norms* for one batch, or ``None`` when there is none (no normalisation, a
    ``MinMaxSampled``, or two normalisations of one channel); ``None`` means: crop raw patches and call
    ``normalize_batch``. ``NormalizeSampled`` channels are normalised as they are cropped; percentile-scaled
    channels are cropped raw and scaled afterwards (:func:`scale_pooled`)."""
    import torch

    if not norms:
        return None
    seen: set[str] = set()
    for norm in norms:
        if not isinstance(norm, (NormalizeSampled, ScaleIntensityRangePercentiles)):
            return None
        for key in norm.keys:
            if key in seen:
                return None
            seen.add(key)
    n, c = len(fov_index), len(source_channel)
    sub = np.zeros((n, c), dtype=np.float32)
    div = np.ones((n, c), dtype=np.float32)
    pooled = []
    for ni, norm in enumerate(norms):
        if isinstance(norm, ScaleIntensityRangePercentiles):
            pooled += [(source_channel.index(key), norm) for key in norm.keys]
            continue
        for key in norm.keys:
            ci = source_channel.index(key)
            a, b = stats.lookup(ni, key, fov_index, t)
            sub[:, ci] = a
            # the divisor exactly as normalize_batch computes it: float32 tensor + python float
            div[:, ci] = (torch.from_numpy(b) + 1e-8).numpy()
    return SampledAffine(sub, div, tuple(pooled))


def scale_pooled(x: np.ndarray, affine: SampledAffine) -> None:
    """The percentile scaling of *affine*'s pooled channels, in place on the cropped (B, C, Z, Y, X) batch:
    the same float32 torch operations as :func:`normalize_batch`, without its copies."""
    import torch

    for ci, norm in affine.pooled:
        view = torch.from_numpy(x)[:, ci : ci + 1]
        _scale_percentiles(view, norm, out=view)


def normalize_batch(x, source_channel, norms, stats: StatsTable, fov_index, t):
    """Normalise a (B, C, Z, Y, X) batch (torch tensor) channel by channel; returns float32 (B, C, Z, Y, X)."""
    import torch

    if x.dtype != torch.float32:
        x = x.to(torch.float32)  # exact for uint8/uint16/int16 data
    if not norms:
        return x
    chans = {name: x[:, i : i + 1] for i, name in enumerate(source_channel)}
    for ni, norm in enumerate(norms):
        for key in norm.keys:
            img = chans[key]
            if isinstance(norm, ScaleIntensityRangePercentiles):
                chans[key] = _scale_percentiles(img, norm)
                continue
            a, b = stats.lookup(ni, key, fov_index, t)
            shape = (-1,) + (1,) * (img.ndim - 1)
            a = torch.from_numpy(a).reshape(shape).to(img.device)
            b = torch.from_numpy(b).reshape(shape).to(img.device)
            if isinstance(norm, NormalizeSampled):
                chans[key] = (img - a) / (b + 1e-8)
            else:  # MinMaxSampled
                img = torch.clamp(img, min=a, max=b)
                chans[key] = 2 * (img - a) / (b - a + 1e-8) - 1
    return torch.cat([chans[name] for name in source_channel], dim=1)


def normalised_batch(plan, i: int):
    """Normalised float32 torch tensor (B, C, Z, Y, X) of batch *i* of a classic plan
    (:class:`~napari_dynaclr.predict.plan.PredictionPlan`), as VisCy feeds the model.

    Cells whose patch holds NaN/Inf (in the raw pixels, or after normalisation) are refused with a
    :class:`~napari_dynaclr.errors.PlateError` naming the first one, unless ``allow_nonfinite`` (then counted
    in the plan's ``nonfinite``).
    """
    import torch

    start, stop = plan.batch_bounds(i)
    rows = plan.cells.iloc[start:stop]
    fov_index, t = rows["fov_index"].to_numpy(), rows["t"].to_numpy()
    cfg = plan.config.source
    affine = sampled_affine(cfg.normalizations, cfg.source_channel, plan.stats, fov_index, t)
    if affine is not None:  # NormalizeSampled fused into the crop, percentiles in place: bit-identical
        out = plan.reader.read(rows, affine)
        if affine.pooled:  # the percentile channels are still raw: refuse NaN/Inf before pooling them
            bad = plan.check_finite(i, rows, out, count=False, channels=[c for c, _ in affine.pooled])
            scale_pooled(out, affine)
            plan.check_finite(i, rows, out, raw_bad=bad)
        else:
            plan.check_finite(i, rows, out)
        return torch.from_numpy(out)
    raw = plan.reader.read(rows)
    bad = plan.check_finite(i, rows, raw, count=not cfg.normalizations)
    x = normalize_batch(torch.from_numpy(raw), cfg.source_channel, cfg.normalizations, plan.stats, fov_index, t)
    if cfg.normalizations:
        plan.check_finite(i, rows, x.numpy(), raw_bad=bad)
    return x


def _percentile(img, q):
    """MONAI ``percentile`` on a tensor: torch.quantile (q cast to the tensor dtype) up to 1e6 elements,
    ``np.percentile`` above (pytorch#64947; computed by :func:`~napari_dynaclr.core.percentile.percentiles`,
    the same values without sorting the batch). *q*: one value, or several (a tensor of results)."""
    import torch

    if img.numel() > 1_000_000:
        res = percentiles(img.detach().cpu().numpy(), np.asarray(q))
        return torch.as_tensor(res, dtype=img.dtype, device=img.device)
    qt = torch.as_tensor(np.asarray(q) / 100.0, dtype=img.dtype, device=img.device)
    return torch.quantile(img, qt)


def _scale_percentiles(img, norm: ScaleIntensityRangePercentiles, out=None):
    """MONAI's ScaleIntensityRangePercentiles on *img*; with *out* (= *img*), in place (in-place torch ops give
    the same values as their out-of-place forms)."""
    # both percentiles from one call (one partition of the batch, not two): the same values as MONAI's two
    # calls, since np.percentile / torch.quantile compute each q independently from the same order statistics
    a_min, a_max = _percentile(img, [norm.lower, norm.upper])
    b_min, b_max = norm.b_min, norm.b_max
    if norm.relative:
        if b_min is None or b_max is None:
            raise ConfigError("ScaleIntensityRangePercentilesd: relative=true needs b_min and b_max")
        b_min = ((norm.b_max - norm.b_min) * (norm.lower / 100.0)) + norm.b_min
        b_max = ((norm.b_max - norm.b_min) * (norm.upper / 100.0)) + norm.b_min
    if float(a_max - a_min) == 0.0:
        warnings.warn("percentile normalisation: upper == lower percentile in a batch", stacklevel=3)
        if out is None:
            return img - a_min if b_min is None else img - a_min + b_min
        out.sub_(a_min)
        return out if b_min is None else out.add_(b_min)
    if out is None:
        img = (img - a_min) / (a_max - a_min)
        if b_min is not None and b_max is not None:
            img = img * (b_max - b_min) + b_min
        if norm.clip:
            img = img.clamp(min=b_min, max=b_max)
        return img
    out.sub_(a_min).div_(a_max - a_min)
    if b_min is not None and b_max is not None:
        out.mul_(b_max - b_min).add_(b_min)
    if norm.clip:
        out.clamp_(min=b_min, max=b_max)
    return out
