"""Long run on CPU: memory stays flat (no per-cell lists growing beyond the final arrays).

Generates the benchmark plate with ``--cells`` (default 20,000; 1,000 cells per 512x512x20 FOV), predicts
it through the same engine as the CLI (``run_prediction``) and samples the process RSS after every
batch. Prints the RSS at 10 % and 100 % of the cells, the growth between them, and compares it with the
growth of the preallocated output arrays (which are allocated up front, so the growth should be ~0).

    python benchmarks/bench_long_run.py --cells 20000 --patch 64
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from scratch import scratch_dir

sys.path.insert(0, str(Path(__file__).parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=20000)
    p.add_argument("--patch", type=int, default=64, help="patch size (smaller = faster model)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args(argv)

    import psutil

    from make_bench_plate import make_bench_plate
    from napari_dynaclr.core.architecture import EncoderConfig
    from napari_dynaclr.core.config import PredictConfig, default_normalizations
    from napari_dynaclr.model.checkpoint import save_checkpoint
    from napari_dynaclr.model.weights import deterministic_encoder
    from napari_dynaclr.predict.run import run_prediction

    work = args.workdir or scratch_dir("dynaclr-long-")
    t0 = time.perf_counter()
    paths = make_bench_plate(work, cells=args.cells)
    print(f"plate: {paths['cells']} cells in {paths['fovs']} FOVs ({time.perf_counter() - t0:.0f} s to generate)")
    ckpt = work / "model.ckpt"
    save_checkpoint(deterministic_encoder(EncoderConfig("convnext_tiny", 1, 1), "long-run"), ckpt)
    cfg = PredictConfig.classic(
        data_path=paths["plate"], tracks_path=paths["tracks"], source_channel=["Phase3D"], z_range=(0, 1),
        initial_yx_patch_size=(args.patch, args.patch), final_yx_patch_size=(args.patch, args.patch),
        batch_size=args.batch_size, normalizations=default_normalizations(["Phase3D"]), ckpt_path=ckpt,
        output_path=work / "embeddings.zarr", overwrite=True,
    )
    proc = psutil.Process()
    samples = []  # (cells done, rss bytes, seconds)
    start = time.perf_counter()

    def on_batch(res):
        samples.append((res.stop, proc.memory_info().rss, time.perf_counter() - start))

    summary, _ = run_prediction(cfg, device="cpu", on_batch=on_batch)
    n = summary.n_cells
    first = next(s for s in samples if s[0] >= 0.1 * n)
    last = samples[-1]
    growth = (last[1] - first[1]) / 2**20
    peak = max(s[1] for s in samples) / 2**20
    out_mb = n * (768 + 32) * 4 / 2**20
    print(f"predicted {n} cells in {summary.predict_seconds:.0f} s ({summary.cells_per_second:.0f} cells/s)")
    print(f"RSS at 10% of cells: {first[1] / 2**20:.0f} MiB; at 100%: {last[1] / 2**20:.0f} MiB; "
          f"growth {growth:+.0f} MiB; peak during prediction {peak:.0f} MiB")
    print(f"output arrays (preallocated before the first batch): {out_mb:.0f} MiB")
    per_1k = growth / max(1, (last[0] - first[0]) / 1000)
    print(f"growth per 1,000 cells after warm-up: {per_1k:+.2f} MiB -> {'FLAT' if abs(per_1k) < 1.0 else 'GROWING'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
