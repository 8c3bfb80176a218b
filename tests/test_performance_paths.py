"""The fast data path gives exactly VisCy's patches: PatchReader vs a naive per-cell crop, fused
NormalizeSampled vs normalize_batch, bounded plane cache."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import CASES, DATA
from napari_dynaclr.core.normalize import MinMaxSampled, NormalizeSampled, ScaleIntensityRangePercentiles, StatsTable
from napari_dynaclr.core.patches import PatchReader
from napari_dynaclr.core.predict_yml import load_predict_yaml
from napari_dynaclr.predict.batches import load_batch
from napari_dynaclr.predict.plan import plan_prediction
from napari_dynaclr.predict.single import predict_batches
from napari_dynaclr.predict.transforms import normalize_batch, sampled_affine, scale_pooled


def naive_patches(fovs, channels, z_range, patch, cells) -> np.ndarray:
    """VisCy's read: one ``image.oindex[t, channels, z0:z1, y-hy:y+hy, x-hx:x+hx]`` per cell."""
    hy, hx = patch[0] // 2, patch[1] // 2
    out = []
    for r in cells.itertuples():
        img = fovs[r.fov_index].image
        sel = (r.t, list(channels), slice(*z_range), slice(r.y - hy, r.y + hy), slice(r.x - hx, r.x + hx))
        a = img.oindex[sel] if hasattr(img, "oindex") else img[sel[0]][sel[1]][:, sel[2], sel[3], sel[4]]
        out.append(np.asarray(a, dtype=np.float32))
    return np.stack(out)


@pytest.fixture(params=CASES)
def case_plan(request):
    cfg = load_predict_yaml(DATA / request.param / "predict.yml")
    plan = plan_prediction(cfg)
    yield request.param, plan
    plan.close()


def test_reader_equals_naive_crop(case_plan):
    case, plan = case_plan
    cfg = plan.config.source
    expected = naive_patches(plan.plate.fovs, plan.channel_indices, cfg.z_range, cfg.initial_yx_patch_size,
                             plan.cells)
    if case == "dev3d2ch":
        assert plan.channel_indices == [1, 0]  # non-contiguous order: read as a span and reordered
    got = np.concatenate([plan.read_batch(i) for i in range(plan.n_batches)])
    np.testing.assert_array_equal(got, expected)
    # planes too large for the cache: bounding-box (or per-patch) reads, nothing cached
    tiny = PatchReader(plan.plate.fovs, plan.channel_indices, cfg.z_range, cfg.initial_yx_patch_size,
                       cfg.patch_size, cache_bytes=1024)
    np.testing.assert_array_equal(tiny.read(plan.cells), expected)
    assert tiny.cached_planes == 0


def test_fused_normalisation_is_bit_identical(case_plan):
    case, plan = case_plan
    cfg = plan.config.source
    for i in range(plan.n_batches):
        start, stop = plan.batch_bounds(i)
        rows = plan.cells.iloc[start:stop]
        ref = normalize_batch(torch.from_numpy(plan.read_batch(i)), cfg.source_channel, cfg.normalizations,
                              plan.stats, rows["fov_index"].to_numpy(), rows["t"].to_numpy())
        got = load_batch(plan, i)
        assert got.dtype == torch.float32 and got.shape == ref.shape
        assert torch.equal(got, ref), f"{case} batch {i}"
    fused = sampled_affine(cfg.normalizations, cfg.source_channel, plan.stats, np.zeros(1, int), np.zeros(1, int))
    # dev3d2ch has a batch-pooled percentile normalisation: cropped raw, then scaled in place
    assert fused is not None and bool(fused.pooled) == (case == "dev3d2ch")


def test_predict_batches_threads_give_serial_batches(case_plan):
    _, plan = case_plan

    class Echo(torch.nn.Module):  # returns a digest of each patch so the order of rows is checked
        def forward(self, x):
            flat = x.flatten(1)
            return torch.stack([flat.sum(1), flat[:, 0], flat[:, -1]], 1), flat[:, :2]

    ref = np.concatenate([Echo()(load_batch(plan, i))[0].numpy() for i in range(plan.n_batches)])
    for threads in (1, 3):
        got = np.concatenate([r.features for r in predict_batches(plan, Echo(), "cpu", loader_threads=threads)])
        np.testing.assert_array_equal(got, ref)
        assert plan.reader.cached_planes == 0  # every plane dropped after its last cell
    sub = [3, 0] if plan.n_batches > 3 else [plan.n_batches - 1, 0]
    got = [r.index for r in predict_batches(plan, Echo(), "cpu", batches=sub)]
    assert got == sub


# ------------------------------------------------------------------------------ in-memory FOVs

@dataclasses.dataclass
class ArrayFOV:
    """A FOV backed by a numpy array (no zarr): exercises the generic read paths."""

    name: str
    image: np.ndarray
    normalization: dict | None = None

    @property
    def shape(self):
        return self.image.shape

    @property
    def dtype(self):
        return self.image.dtype


def _fovs(dtype=np.float32, n=2, shape=(3, 6, 4, 96, 120), seed=0):
    rng = np.random.default_rng(seed)
    fovs = []
    for k in range(n):
        if np.dtype(dtype).kind == "u":
            img = rng.integers(0, 60000, shape).astype(dtype)
        else:
            img = (rng.normal(0, 1, shape) * 10.0 ** rng.integers(-3, 4, shape)).astype(dtype)
        stats = {
            "fov_statistics": {"mean": float(img.mean()), "std": float(img.std()), "p1": -3.0, "p99": 2.5},
            "timepoint_statistics": {str(t): {"mean": 0.1 * t + k, "std": 1.0 + t} for t in range(shape[0])},
        }
        fovs.append(ArrayFOV(f"A/1/{k}", img, {f"ch{c}": stats for c in range(shape[1])}))
    return fovs


def _cells(fovs, n, patch, seed=1):
    rng = np.random.default_rng(seed)
    hy, hx = patch[0] // 2, patch[1] // 2
    rows = []
    for _ in range(n):
        f = int(rng.integers(len(fovs)))
        T, _, _, H, W = fovs[f].shape
        rows.append((f, int(rng.integers(T)), int(rng.integers(hy + 1, H - hy)), int(rng.integers(hx + 1, W - hx))))
    return pd.DataFrame(rows, columns=["fov_index", "t", "y", "x"])


@pytest.mark.parametrize("channels", [[2], [1, 0], [0, 2, 1], [0, 5], [3, 4]])
@pytest.mark.parametrize("cache_bytes", [512 * 2**20, 100_000, 1])
def test_reader_paths_on_arrays(channels, cache_bytes):
    """Whole planes (cached), bounding boxes and per-patch reads; contiguous, reordered and sparse channels."""
    fovs = _fovs()
    patch, z = (32, 40), (1, 3)
    cells = _cells(fovs, 50, patch)
    reader = PatchReader(fovs, channels, z, patch, cache_bytes=cache_bytes)
    expected = naive_patches(fovs, channels, z, patch, cells)
    for chunk in np.array_split(np.arange(len(cells)), 4):
        np.testing.assert_array_equal(reader.read(cells.iloc[chunk]), expected[chunk])
    assert reader.cached_bytes <= max(cache_bytes, reader._plane_nbytes(fovs[0]))


def test_reader_centre_crop_and_odd_patch():
    fovs = _fovs()
    cells = _cells(fovs, 20, (41, 41))
    reader = PatchReader(fovs, [0], (0, 2), (41, 41), final_size=(32, 24))
    full = naive_patches(fovs, [0], (0, 2), (41, 41), cells)  # 40 x 40 (VisCy's 2*(p//2))
    oy, ox = (40 - 32) // 2, (40 - 24) // 2
    np.testing.assert_array_equal(reader.read(cells), full[..., oy : oy + 32, ox : ox + 24])


def test_sparse_cells_in_large_planes_read_per_patch():
    fovs = _fovs(shape=(1, 1, 1, 400, 400))
    cells = pd.DataFrame({"fov_index": [0, 0, 0], "t": [0, 0, 0], "y": [20, 380, 200], "x": [20, 380, 30]})
    reader = PatchReader(fovs, [0], (0, 1), (32, 32), cache_bytes=1)
    np.testing.assert_array_equal(reader.read(cells), naive_patches(fovs, [0], (0, 1), (32, 32), cells))
    assert reader.reads == 3 and reader.bytes_read == 3 * 32 * 32 * 4


@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.float64])
@pytest.mark.parametrize("level", ["fov_statistics", "timepoint_statistics"])
def test_fused_equals_normalize_batch_on_arrays(dtype, level):
    fovs = _fovs(dtype=dtype)
    channels, names = [3, 1, 4], ["ch3", "ch1", "ch4"]
    norms = [NormalizeSampled(keys=("ch3", "ch4"), level=level), NormalizeSampled(keys=("ch1",), level=level)]
    stats = StatsTable(fovs, norms)
    cells = _cells(fovs, 40, (24, 24))
    reader = PatchReader(fovs, channels, (0, 4), (24, 24))
    fi, t = cells["fov_index"].to_numpy(), cells["t"].to_numpy()
    aff = sampled_affine(norms, names, stats, fi, t)
    assert aff is not None
    got = torch.from_numpy(reader.read(cells, aff))
    ref = normalize_batch(torch.from_numpy(reader.read(cells)), names, norms, stats, fi, t)
    assert torch.equal(got, ref)
    # a channel without normalisation passes through unchanged
    aff = sampled_affine(norms[:1], names, stats, fi, t)
    got = torch.from_numpy(reader.read(cells, aff))
    ref = normalize_batch(torch.from_numpy(reader.read(cells)), names, norms[:1], stats, fi, t)
    assert torch.equal(got, ref)


@pytest.mark.parametrize("pct", [
    ScaleIntensityRangePercentiles(keys=("ch1",), lower=50, upper=99, b_min=0.0, b_max=1.0),
    ScaleIntensityRangePercentiles(keys=("ch1",), lower=1, upper=99.5, b_min=-1.0, b_max=1.0, clip=True),
    ScaleIntensityRangePercentiles(keys=("ch1",), lower=5, upper=95, b_min=None, b_max=None),
])
@pytest.mark.parametrize("n_cells", [6, 90])  # 6 x 4 x 48 x 48 < 1e6 values: torch.quantile; 90: numpy's
def test_fused_percentile_channels_equal_the_reference(pct, n_cells):
    """NormalizeSampled on ch3 and ch0 fused into the crop, percentile scaling of ch1 in place: the same bits
    as VisCy's order of operations (np.percentile / torch.quantile, then out-of-place float32 torch ops)."""
    fovs = _fovs(shape=(3, 6, 4, 96, 120))
    names = ["ch3", "ch1", "ch0"]
    norms = [NormalizeSampled(keys=("ch3",)), pct, NormalizeSampled(keys=("ch0",), level="timepoint_statistics")]
    stats = StatsTable(fovs, norms)
    cells = _cells(fovs, n_cells, (48, 48))
    reader = PatchReader(fovs, [3, 1, 0], (0, 4), (48, 48))
    fi, t = cells["fov_index"].to_numpy(), cells["t"].to_numpy()
    aff = sampled_affine(norms, names, stats, fi, t)
    assert [c for c, _ in aff.pooled] == [1]
    got = reader.read(cells, aff)
    scale_pooled(got, aff)

    raw = torch.from_numpy(reader.read(cells))
    img = raw[:, 1:2]
    if img.numel() > 1_000_000:  # MONAI's percentile
        lo, hi = (torch.tensor(np.percentile(img.numpy(), q), dtype=torch.float32) for q in (pct.lower, pct.upper))
    else:
        lo, hi = (torch.quantile(img, torch.tensor(q / 100, dtype=torch.float32)) for q in (pct.lower, pct.upper))
    ref1 = (img - lo) / (hi - lo)
    if pct.b_min is not None:
        ref1 = ref1 * (pct.b_max - pct.b_min) + pct.b_min
    if pct.clip:
        ref1 = ref1.clamp(min=pct.b_min, max=pct.b_max)
    ref = normalize_batch(raw, names, norms, stats, fi, t)
    assert torch.equal(ref[:, 1:2], ref1)
    assert torch.equal(torch.from_numpy(got), ref)


def test_no_fused_form_for_other_normalisations():
    fovs = _fovs()
    names = ["ch0", "ch1"]
    fi = t = np.zeros(3, int)
    for norms in (
        [],
        [MinMaxSampled(keys=("ch0",))],
        [ScaleIntensityRangePercentiles(keys=("ch1",)), MinMaxSampled(keys=("ch0",))],
        [NormalizeSampled(keys=("ch0",)), NormalizeSampled(keys=("ch0",), level="timepoint_statistics")],
        [NormalizeSampled(keys=("ch1",)), ScaleIntensityRangePercentiles(keys=("ch1",))],
    ):
        stats = StatsTable(fovs, [n for n in norms if not isinstance(n, ScaleIntensityRangePercentiles)])
        assert sampled_affine(norms, names, stats, fi, t) is None


def test_plane_cache_bounded_and_shared_between_threads():
    fovs = _fovs(n=3, shape=(6, 2, 2, 64, 64))
    cells = _cells(fovs, 400, (16, 16))
    plane = 2 * 2 * 64 * 64 * 4
    reader = PatchReader(fovs, [0, 1], (0, 2), (16, 16), cache_bytes=5 * plane)
    expected = naive_patches(fovs, [0, 1], (0, 2), (16, 16), cells)
    parts = np.array_split(np.arange(len(cells)), 16)
    results = [None] * len(parts)
    peak = []

    def work(k):
        for j in range(k, len(parts), 4):
            results[j] = reader.read(cells.iloc[parts[j]])
            peak.append(reader.cached_bytes)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    np.testing.assert_array_equal(np.concatenate(results), expected)
    assert max(peak) <= 5 * plane + 4 * plane  # cap, plus planes still being cropped by the 4 threads
    # a plane is read at most once per read() call that needs it (threads share in-flight reads)
    assert reader.reads <= sum(len(set(zip(cells.fov_index[p], cells.t[p]))) for p in parts)

    # with expect(): planes are dropped after their last cell, so nothing remains at the end
    reader = PatchReader(fovs, [0, 1], (0, 2), (16, 16))
    reader.expect(cells)
    for part in parts:
        reader.read(cells.iloc[part])
    assert reader.cached_planes == 0 and reader.cached_bytes == 0
    assert reader.reads == len(set(zip(cells.fov_index, cells.t)))  # each plane read exactly once
