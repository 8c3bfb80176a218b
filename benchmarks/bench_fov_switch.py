"""The longest GUI-thread block of a FOV switch between large FOVs (issue 23 item 2), alone: a synthetic cell table
(--cells, --fov-cells per FOV, no plate) shown through the session's staged install, then --switches FOV switches
in a row, each measured with a 5 ms QTimer heartbeat from the switch until --settle seconds after it (its later
turns and paints included). Run under a display:

    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python benchmarks/bench_fov_switch.py

Prints one line per switch and the load average; compare two trees with ``PYTHONPATH=<tree>/src``, run right
after each other.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_scatter import Heartbeat, synthetic_obs  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=1_000_000)
    ap.add_argument("--fov-cells", type=int, default=100_000)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--switches", type=int, default=4)
    ap.add_argument("--settle", type=float, default=0.6)
    args = ap.parse_args(argv)

    import napari

    from napari_dynaclr._napari.cellmodel.table import cell_table
    from napari_dynaclr._napari.session import get_session, prepare_table

    obs, obsm = synthetic_obs(args.cells, args.fov_cells, args.frames)
    table = cell_table(obs, obsm)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1366, 768)
    app = napari.qt.get_qapp()
    s = get_session(viewer)
    for _ in s.install(prepare_table(table)):
        app.processEvents()

    def spin(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.001)

    spin(0.5)
    print(f"load average {os.getloadavg()[0]:.1f}; {len(table):,} cells, FOVs of {args.fov_cells:,}", flush=True)
    fovs = s.fov_names()
    heartbeat = Heartbeat()
    for _ in range(args.switches):
        target = fovs[(fovs.index(s.fov_name) + 1) % len(fovs)]
        heartbeat.start()
        s.show_fov(target)
        spin(args.settle)
        print(f"  FOV switch to {target}: longest block {heartbeat.stop():.0f} ms", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end", flush=True)
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
