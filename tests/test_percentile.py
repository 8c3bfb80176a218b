"""core.percentile.percentiles equals np.percentile bit for bit (the batch-pooled percentile of VisCy's
ScaleIntensityRangePercentilesd), on the data shapes that make a sampled bracket hard."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dynaclr.core import percentile
from napari_dynaclr.core.percentile import percentiles

QS = ([50, 99], [0, 100], [1, 99.9], [33.3, 66.6], [100, 100], [0.0001], [50.0, 50.0, 99.99])


def _data():
    rng = np.random.default_rng(7)
    n = 1_200_001
    yield "normal", rng.standard_normal(n).astype(np.float32)
    yield "few levels", rng.integers(0, 50, n).astype(np.float32)  # huge ties
    yield "constant", np.full(n, 3.25, np.float32)
    yield "cauchy", rng.standard_cauchy(n).astype(np.float32)
    yield "two spikes", np.r_[np.zeros(n // 2, np.float32), np.full(n - n // 2, 7.0, np.float32)]
    yield "signed zeros", np.r_[np.zeros(n // 2, np.float32), -np.zeros(n // 2, np.float32), np.ones(1, np.float32)]
    yield "sorted", np.sort(rng.standard_normal(n).astype(np.float32))
    yield "inf", np.r_[rng.standard_normal(n).astype(np.float32), np.full(20_000, np.inf, np.float32),
                       np.full(5, -np.inf, np.float32)]
    yield "one nan", np.r_[rng.standard_normal(n).astype(np.float32), np.float32([np.nan])]
    yield "image batch", (rng.gamma(2.0, 100.0, (8, 2, 10, 160, 160)).astype(np.float32))[:, 1]  # strided view


@pytest.mark.parametrize("name,x", list(_data()), ids=[name for name, _ in _data()])
def test_bit_identical_to_numpy(name, x):
    for q in QS:
        want = np.percentile(x, np.asarray(q))
        got = percentiles(x, np.asarray(q))
        assert got.dtype == want.dtype == np.float64
        assert np.array_equal(got, want, equal_nan=True), (name, q, got, want)


def test_the_fast_path_runs_and_a_missed_bracket_falls_back(monkeypatch):
    x = np.random.default_rng(3).standard_normal(2_000_000).astype(np.float32)
    calls = []
    real = np.percentile
    monkeypatch.setattr(percentile.np, "percentile", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert np.array_equal(percentiles(x, [50, 99]), real(x, [50, 99]))
    assert not calls  # no full partition
    # an adversarial sample (it only sees the smallest values): every bracket misses, numpy answers
    monkeypatch.setattr(percentile, "_sample", lambda a: np.sort(a.reshape(-1))[: percentile.SAMPLE])
    assert np.array_equal(percentiles(x, [50, 99]), real(x, [50, 99]))
    assert calls


def test_small_or_other_dtypes_use_numpy():
    rng = np.random.default_rng(0)
    for x in (rng.standard_normal(1000).astype(np.float32), rng.standard_normal(1_500_000)):
        assert np.array_equal(percentiles(x, [50, 99]), np.percentile(x, [50, 99]))
    with pytest.raises(ValueError, match="Percentiles must be in the range"):
        percentiles(np.zeros(2_000_000, np.float32), [50, 101])
