"""Switching the shown FOV in the explorer: layers refilled in place vs. built anew.

Builds a synthetic demo plate, shows its planned cells in a real napari window (run under Xvfb) and
switches FOV several times, once the way the explorer does it (``ExplorerSession.show_fov``: the image,
Tracks and Points layers get the new FOV's data) and once removing the layers first (what the explorer
did before: napari builds every layer again). Reports the time the GUI thread is busy per switch
(``show_fov`` plus the next paint) and the ratio.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/bench_fov_switch.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells-per-fov", type=int, default=25)
    p.add_argument("--timepoints", type=int, default=20)
    p.add_argument("--fovs-per-well", type=int, default=2)
    p.add_argument("--switches", type=int, default=8)
    args = p.parse_args(argv)

    from napari_dynaclr._napari import workers as jobs
    from napari_dynaclr.core.predict_yml import load_predict_yaml
    from napari_dynaclr.core.synthetic import SyntheticSpec
    from napari_dynaclr.demo import make_demo_inputs

    work = Path(tempfile.mkdtemp(prefix="dynaclr-fov-"))
    spec = SyntheticSpec(fovs_per_well=args.fovs_per_well, timepoints=args.timepoints,
                         cells_per_fov=args.cells_per_fov)
    cfg = load_predict_yaml(make_demo_inputs(work, spec, umap=False)["config"])
    table = jobs.preview_cells(cfg)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_dynaclr._napari.session import get_session

    viewer = napari.Viewer(show=True)
    session = get_session(viewer)
    session.set_table(table, plate_path=cfg.source.data_path, tracks_path=cfg.source.tracks_path, preview=True)
    for _ in range(5):
        QApplication.processEvents()
    jobs.freeze_long_lived_heap()  # as the widget does before its first layers
    names = session.fov_names()
    print(f"{len(table)} cells in {len(names)} FOVs; image {session.plate.fovs[0].shape} (TCZYX)")

    def switch(rebuild: bool) -> list[float]:
        times = []
        for _ in range(args.switches):
            name = names[(names.index(session.fov_name) + 1) % len(names)]
            t0 = time.perf_counter()
            if rebuild:
                session._remove_layers()
            session.show_fov(name)
            QApplication.processEvents()  # the paint of the new layers
            times.append((time.perf_counter() - t0) * 1000)
        return times

    refill = switch(rebuild=False)
    rebuild = switch(rebuild=True)
    for label, times in (("refilled in place", refill), ("built anew", rebuild)):
        print(f"{label:>18}: median {np.median(times):.0f} ms, longest {max(times):.0f} ms per switch "
              f"({', '.join(f'{t:.0f}' for t in times)})")
    print(f"speed-up (median): {np.median(rebuild) / np.median(refill):.1f}x")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
