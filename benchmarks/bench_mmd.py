"""MMD permutation test at VisCy's default size: 2 x 2,000 cells x 768 features, 1,000 permutations (target < 2 s
on 2 cores), and VisCy's own ``mmd_permutation_test`` on the same data when its file is available.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_mmd.py [--cells 2000] [--features 768] [--permutations 1000]
        [--repeat 3] [--viscy-src PATH]

``--viscy-src``: a VisCy checkout (``packages/viscy-utils/src/viscy_utils/evaluation/mmd.py`` under it) or an
installed ``viscy_utils`` (``pip install --target DIR viscy-utils==0.1.0``); the file is loaded on its own, so
VisCy's other dependencies are not needed. Both runs include the median-heuristic bandwidth; the script says
whether the two results are identical (MMD², p-value and the whole null distribution).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

import numpy as np


def viscy_mmd(root: Path):
    """VisCy's ``viscy_utils/evaluation/mmd.py`` found under *root*, loaded as a lone module."""
    found = sorted(root.rglob("viscy_utils/evaluation/mmd.py"))
    if not found:
        raise SystemExit(f"no viscy_utils/evaluation/mmd.py under {root}")
    spec = importlib.util.spec_from_file_location("viscy_mmd_reference", found[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, found[0]


def timed(fn, repeat: int):
    """(median wall s, best wall s, median CPU s of the process, all threads, result)."""
    times, cpu, out = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return float(np.median(times)), min(times), float(np.median(cpu)), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=2000, help="cells per group")
    parser.add_argument("--features", type=int, default=768)
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--viscy-src", type=Path)
    args = parser.parse_args()

    from napari_dynaclr.evaluate.mmd_kernel import mmd_permutation_test

    rng = np.random.default_rng(0)
    A = rng.standard_normal((args.cells, args.features), dtype=np.float32)
    B = (rng.standard_normal((args.cells, args.features), dtype=np.float32) * 1.02 + 0.01).astype(np.float32)
    print(f"{args.cells} + {args.cells} cells x {args.features}, {args.permutations} permutations; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    mmd_permutation_test(A[:50], B[:50], 10)  # imports and BLAS threads warm
    med, best, cpu, ours = timed(lambda: mmd_permutation_test(A, B, args.permutations, None, 42), args.repeat)
    print(f"napari-dynaclr  median {med:6.2f} s  best {best:6.2f} s  CPU {cpu:6.2f} s   MMD² {ours.mmd2:.6g}  "
          f"p {ours.p_value:.4g}   (target < 2 s: {'ok' if med < 2 else 'OVER'})")
    if args.viscy_src is not None:
        module, path = viscy_mmd(args.viscy_src)
        vmed, vbest, vcpu, ref = timed(lambda: module.mmd_permutation_test(A, B, args.permutations, None, 42),
                                       args.repeat)
        same = ref[0] == ours.mmd2 and ref[1] == ours.p_value and np.array_equal(ref[2], ours.null)
        print(f"VisCy           median {vmed:6.2f} s  best {vbest:6.2f} s  CPU {vcpu:6.2f} s   MMD² {ref[0]:.6g}  "
              f"p {ref[1]:.4g}")
        print(f"  (VisCy's file: {path})")
        print(f"speed-up {vmed / med:.1f}x wall (medians), {vcpu / cpu:.1f}x CPU; results "
              f"{'identical' if same else 'DIFFERENT'}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
