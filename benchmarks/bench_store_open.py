"""Reading an embedding store in a thread beside a GUI thread: how long the main thread is kept waiting for
the GIL, ``LazyStore`` + the explorer's cell table (what the open's worker does) against ``anndata.read_zarr``.

The main thread ticks every millisecond while a thread reads the store; the longest gap between ticks is the
longest the GUI thread would have been blocked. Prints both and their ratio (best of *repeats*).

    .venv/bin/python benchmarks/bench_store_open.py --cells 1000000
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd


def longest_wait(job) -> float:
    """The longest gap between the main thread's 1 ms ticks while *job* runs in a thread (seconds)."""
    th = threading.Thread(target=job)
    longest, last = 0.0, time.perf_counter()
    th.start()
    while th.is_alive():
        time.sleep(0.001)
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    th.join()
    return longest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=400_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    from napari_dynaclr._napari import cellmodel
    from napari_dynaclr.core.store import LazyStore, build_anndata, read_store, write_store

    rng = np.random.default_rng(2)
    n = args.cells
    obs = pd.DataFrame({
        "fov_name": rng.choice(["B/2/0", "A/1/0", "A/1/10"], n),
        "track_id": rng.integers(0, 50, n), "t": rng.integers(0, 20, n), "id": np.arange(n),
        "parent_track_id": -1, "parent_id": -1, "y": rng.integers(0, 256, n), "x": rng.integers(0, 256, n),
    })
    adata = build_anndata(obs, rng.normal(size=(n, 4)).astype(np.float32), rng.normal(size=(n, 2)).astype(np.float32))
    adata.obsm["X_umap"] = rng.normal(size=(n, 2)).astype(np.float32)
    path = write_store(adata, Path(tempfile.mkdtemp(prefix="dynaclr-open-")) / "big.zarr")
    del adata

    lazy = min(longest_wait(lambda: cellmodel.FrameIndex(cellmodel.cell_table(LazyStore(path).obs)))
               for _ in range(args.repeats))
    full = min(longest_wait(lambda: read_store(path)) for _ in range(args.repeats))
    print(f"{n} cells: longest GUI-thread wait, LazyStore + cell table {lazy * 1000:.0f} ms, "
          f"anndata.read_zarr {full * 1000:.0f} ms (ratio {full / lazy:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
