"""Bag-of-Channels data path benchmark (issue 14): our BoC batches vs VisCy's ThreadDataLoader predict loop.

    python benchmarks/bench_boc.py                 # 3 FOVs x 4 t x 60 cells x 2 channels = 1,440 samples
    python benchmarks/bench_boc.py --fovs 6 --workers 4

The plate: HCS NGFF 0.4, channels ``Phase3D`` and ``raw GFP EX488 EM525-45`` (one experiment each, markers
Phase3D and G3BP1), TCZYX (4, 2, 16, 512, 512) float32 chunked per (t, c) ZYX volume, pixel size 0.2 um (XY) /
0.25 um (Z), ``timepoint_statistics`` and ``focus_slice`` attributes as ``viscy preprocess`` / QC write them;
the cell index is built and preprocessed from it. The model settings are DynaCLR-2D-MIP-BagOfChannels': reference
pixel size 0.1494 / 0.174 um (so every sample is rescaled: 144 px read -> 192, 11 slices -> 16),
z_extraction_window 16, z_focus_offset 0.3, z_window 1 with the z reduction (middle slice for Phase3D, max over z
for G3BP1), yx 192 -> 160, batch 128.

Both sides produce the same model inputs (checked: max |diff| printed) for every sample, timed to the last
batch tensor, without a model:

* ours: ``read_ahead`` over the BoC plan (the engine's loader: plane cache, fused normalisation, one index
  selection for resize + reduction + crop) with ``--workers`` threads;
* VisCy-like: VisCy is not installable here (its packages are not on the package index this machine uses), so
  this is a re-implementation of its predict loop from its source: per batch, per row a lazy tensorstore slice
  ``img[t, [c], z0:z1, y-h:y+h, x-h:x+h]`` of the FOV's array (tensorstore 0.1.86, as VisCy), one
  ``ts.stack(...).read()``, a per-sample ``F.interpolate(nearest-exact)``, ``torch.stack``, per-row float32
  statistics tensors, then the batch transforms (``NormalizeSampled``, ``BatchedChannelWiseZReductiond``,
  centre crop) in torch; loaded by a torch ``DataLoader`` with ``--workers`` worker processes behind a
  one-batch background thread buffer (MONAI's ``ThreadDataLoader``, ``buffer_size`` 1).
"""

from __future__ import annotations

import argparse
import json
import platform
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

CHANNELS = ("Phase3D", "raw GFP EX488 EM525-45")
MARKERS = ("Phase3D", "G3BP1")
T, Z, H, W = 4, 16, 512, 512
MARGIN = 100


def make_plate(out: Path, fovs: int, cells: int, seed: int = 0) -> dict:
    """The benchmark plate, its tracks and its (preprocessed) cell-index parquet."""
    import pandas as pd
    from iohub.ngff import open_ome_zarr

    from napari_dynaclr.core.cell_index import build_cell_index, preprocess_cell_index, sampled_statistics
    from napari_dynaclr.core.collection import parse_collection
    from napari_dynaclr.core.plate import Plate

    rng = np.random.default_rng(seed)
    plate_path, tracks = out / "plate.zarr", out / "tracks"
    zz, yy, xx = np.mgrid[0:Z, 0:H, 0:W].astype(np.float32)
    wells = []
    with open_ome_zarr(plate_path, layout="hcs", mode="w-", channel_names=list(CHANNELS), version="0.4") as plate:
        for k in range(fovs):
            row, col = "ABCDEFGH"[k % 8], str(k // 8 + 1)
            wells.append(f"{row}/{col}")
            y = rng.uniform(MARGIN, H - MARGIN, cells)
            x = rng.uniform(MARGIN, W - MARGIN, cells)
            rows = []
            img = np.empty((T, 2, Z, H, W), dtype=np.float32)
            for t in range(T):
                base = 100 + 5 * np.sin(yy / 31) + rng.normal(0, 2, (Z, H, W)).astype(np.float32)
                phase = np.exp(-((zz - 8) / 3) ** 2) * np.sin(xx / 7) * 0.05
                img[t, 0] = np.round(phase * 64) / 64
                img[t, 1] = np.round(base)
                for i in range(cells):
                    rows.append((i + 1, t, -1, round(float(y[i] + t), 3), round(float(x[i] - t), 3)))
            pos = plate.create_position(row, col, "000000")
            pos.create_image("0", img, chunks=(1, 1, Z, H, W))
            norm = {}
            for c, ch in enumerate(CHANNELS):
                norm[ch] = {"timepoint_statistics": {str(t): sampled_statistics(img, t, c) for t in range(T)}}
            pos.zattrs["normalization"] = norm
            pos.zattrs["focus_slice"] = {"Phase3D": {"fov_statistics": {"z_focus_mean": 8.0},
                                                     "per_timepoint": {str(t): 8 for t in range(T)}}}
            d = tracks / row / col / "000000"
            d.mkdir(parents=True)
            pd.DataFrame(rows, columns=["track_id", "t", "parent_track_id", "y", "x"]).to_csv(d / "tracks.csv",
                                                                                           index=False)
        plate.zattrs["focus_slice"] = {"Phase3D": {"dataset_statistics": {"z_focus_mean": 8.0}}}
    doc = {"experiments": [
        {"name": f"bench_{m}", "data_path": str(plate_path), "tracks_path": str(tracks),
         "channels": [{"name": ch, "marker": m}], "perturbation_wells": {"mock": wells},
         "pixel_size_xy_um": 0.2, "pixel_size_z_um": 0.25} for ch, m in zip(CHANNELS, MARKERS)]}
    experiments = parse_collection(doc)
    with Plate(plate_path) as plate:
        df = preprocess_cell_index(build_cell_index(experiments), {str(plate_path): plate}, "Phase3D")
    df.to_parquet(out / "cell_index.parquet", index=False)
    return {"index": out / "cell_index.parquet", "samples": len(df)}


def boc_config(index: Path, batch: int, workers: int):
    from napari_dynaclr.core.boc import BocNormalization
    from napari_dynaclr.core.config import PredictConfig

    return PredictConfig.boc(cell_index_path=index, focus_channel="Phase3D", reference_pixel_size_xy_um=0.1494,
                             reference_pixel_size_z_um=0.174, z_window=1, z_extraction_window=16,
                             z_focus_offset=0.3, yx_patch_size=(192, 192), final_yx_patch_size=(160, 160),
                             batch_size=batch, normalizations=[BocNormalization()], z_reduction=True,
                             num_workers=workers)


def run_ours(plan, workers: int):
    from napari_dynaclr.predict.batches import read_ahead

    out = []
    t0 = time.perf_counter()
    for _, x in read_ahead(plan, range(plan.n_batches), threads=workers):
        out.append(x)
    return time.perf_counter() - t0, out


class VisCyLikeDataset:
    """VisCy's predict dataset re-implemented (see the module docstring): rows in parquet order."""

    def __init__(self, plan, cache_pool_bytes: int):
        cells = plan.cells
        self.rows = cells
        self.plan = plan
        self.cache_pool_bytes = cache_pool_bytes
        self._stores = {}
        self._context = None

    def __len__(self):
        return len(self.rows)

    def _store(self, key, fov):
        import tensorstore as ts

        if key not in self._stores:
            if self._context is None:  # one per (worker) process, as VisCy's dataset holds one
                self._context = ts.Context({"cache_pool": {"total_bytes_limit": self.cache_pool_bytes}})
            arr = key / "0"
            self._stores[key] = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(arr)},
                                         "recheck_cached_data": "open"}, read=True, context=self._context).result()
        return self._stores[key]

    def __getitems__(self, indices):
        import tensorstore as ts
        import torch
        import torch.nn.functional as F

        rows = self.rows.iloc[list(indices)]
        patches, scales, targets, means, stds, meta = [], [], [], [], [], []
        for _, row in rows.iterrows():  # VisCy iterates rows as Series
            exp = self.plan.experiments[int(row["exp_index"])]
            fov = exp.plate.fovs[int(row["fov_index"])]
            img = self._store(exp.plate.path / fov.name, fov)
            c = exp.plate.channel_names.index(exp.channel)
            g = exp.geometry
            y, x, (hy, hx), (z0, z1) = int(row["yc"]), int(row["xc"]), g.read_half, g.read_z
            patches.append(img[int(row["t"]), [c], z0:z1, y - hy:y + hy, x - hx:x + hx])
            scales.append(g.scale)
            targets.append(g.target)
            means.append(torch.tensor(np.float32(row["norm_mean"])))
            stds.append(torch.tensor(np.float32(row["norm_std"])))
            meta.append({"marker": row["marker"]})
        data = torch.from_numpy(ts.stack([p.translate_to[0] for p in patches]).read().result())
        rescaled = []
        for i in range(data.shape[0]):
            p = data[i]
            if any(s != 1.0 for s in scales[i]):
                p = F.interpolate(p[None].float(), size=targets[i], mode="nearest-exact")[0]
            rescaled.append(p)
        return {"anchor": torch.stack(rescaled), "mean": torch.stack(means), "std": torch.stack(stds),
                "meta": meta}


def viscy_batch_transform(batch, z_window: int, final: tuple[int, int]):
    """NormalizeSampled, BatchedChannelWiseZReductiond, BatchedCenterSpatialCropd on a (B, 1, Z, Y, X) batch."""
    import torch

    from napari_dynaclr.core.boc import is_label_free

    x = batch["anchor"]
    shape = (-1, 1, 1, 1, 1)
    x = (x - batch["mean"].reshape(shape)) / (batch["std"].reshape(shape) + 1e-8)
    if x.shape[2] > 1:
        out = []
        for i, m in enumerate(batch["meta"]):
            s = x[i]
            out.append(s[:, s.shape[1] // 2:s.shape[1] // 2 + 1] if is_label_free(m["marker"])
                       else s.amax(dim=1, keepdim=True))
        x = torch.stack(out)
    zs = x.shape[2] // 2 - z_window // 2
    ys = x.shape[3] // 2 - final[0] // 2
    xs = x.shape[4] // 2 - final[1] // 2
    return x[:, :, zs:zs + z_window, ys:ys + final[0], xs:xs + final[1]].contiguous()


def _identity(batch):
    return batch


def run_viscy_like(plan, workers: int, cache_pool_bytes: int):
    from torch.utils.data import DataLoader

    cfg = plan.config
    loader = DataLoader(VisCyLikeDataset(plan, cache_pool_bytes), batch_size=cfg.batch_size, shuffle=False,
                        drop_last=False, collate_fn=_identity, num_workers=workers)
    buf: queue.Queue = queue.Queue(maxsize=1)  # MONAI ThreadBuffer, buffer_size 1
    done = object()

    def fill():
        for b in loader:
            buf.put(b)
        buf.put(done)

    out = []
    t0 = time.perf_counter()
    th = threading.Thread(target=fill, daemon=True)
    th.start()
    while (b := buf.get()) is not done:
        out.append(viscy_batch_transform(b, cfg.source.z_window, cfg.source.patch_size))
    th.join()
    return time.perf_counter() - t0, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fovs", type=int, default=3)
    p.add_argument("--cells", type=int, default=60, help="tracks per FOV (each at every t, in both channels)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="our read threads / VisCy-like loader workers")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cache-pool-bytes", type=int, default=500_000_000,
                   help="VisCy-like tensorstore cache pool (MultiExperimentDataModule's default 500 MB; the "
                        "eval configs of the conformance cases use 0)")
    p.add_argument("--dir", type=Path, help="keep the plate here (default: a temporary folder)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    import torch

    from napari_dynaclr.predict.boc_plan import plan_boc

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        info = make_plate(folder, args.fovs, args.cells) if not (folder / "cell_index.parquet").exists() else {
            "index": folder / "cell_index.parquet"}
        plan = plan_boc(boc_config(info["index"], args.batch_size, args.workers))
        try:
            ours, theirs = [], []
            diff = None
            for _ in range(args.repeats):
                s_ours, a = run_ours(plan, args.workers)
                s_theirs, b = run_viscy_like(plan, args.workers, args.cache_pool_bytes)
                ours.append(s_ours)
                theirs.append(s_theirs)
                if diff is None:
                    diff = max(float((x.numpy() - y.numpy()).__abs__().max()) for x, y in zip(a, b))
                    assert sum(len(x) for x in a) == plan.n_cells == sum(len(y) for y in b)
            n = plan.n_cells
            g = plan.experiments[0].geometry
        finally:
            plan.close()
    res = {
        "samples": n, "batch_size": args.batch_size, "workers": args.workers,
        "viscy_cache_pool_bytes": args.cache_pool_bytes,
        "read_window": [g.read_z[1] - g.read_z[0], 2 * g.read_half[0], 2 * g.read_half[1]],
        "resized_to": list(g.target), "model_input": [1, 1, 160, 160],
        "ours_s": ours, "viscy_like_s": theirs,
        "ours_samples_per_s": n / statistics.median(ours), "viscy_like_samples_per_s": n / statistics.median(theirs),
        "ratio": statistics.median(theirs) / statistics.median(ours), "max_abs_diff_of_model_inputs": diff,
        "cpus": __import__("os").cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
    }
    print(f"{n} samples ({res['read_window']} read -> {res['resized_to']} -> (1, 160, 160)), batch "
          f"{args.batch_size}, {args.workers} workers, {res['cpus']} CPUs, VisCy cache pool "
          f"{args.cache_pool_bytes / 1e6:.0f} MB; median of {args.repeats}")
    print(f"  ours        {res['ours_samples_per_s']:8.1f} samples/s  ({', '.join(f'{s:.2f}' for s in ours)} s)")
    theirs_s = ", ".join(f"{s:.2f}" for s in theirs)
    print(f"  VisCy-like  {res['viscy_like_samples_per_s']:8.1f} samples/s  ({theirs_s} s)")
    print(f"  ratio       {res['ratio']:.1f}x   (model inputs max |diff| {diff:.3g})")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
