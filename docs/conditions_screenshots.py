"""Regenerate the screenshots of the dock's Conditions and Time tabs in docs/images/ (needs a display: Xvfb).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/conditions_screenshots.py [--work /tmp/dynaclr-cond]

Rebuilds the conformance kit's store (tests/eval2_data.py: 3 wells, 36 tracks, an infection), opens it in the
DynaCLR dock, runs MMD (perturbation, uninfected1 against the others, 3-hour bins) and the kit's pseudotime
config with its annotations, selects a comparison and a track, and saves the window with each tab.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def _wait(app, done, timeout: float = 300.0) -> None:
    end = time.monotonic() + timeout
    while not done():
        if time.monotonic() > end:
            raise TimeoutError("the dock did not finish in time")
        app.processEvents()
        time.sleep(0.02)
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/dynaclr-cond"))
    ap.add_argument("--out", type=Path, default=HERE / "images")
    args = ap.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication, QWidget

    from eval2_data import ANNOTATIONS, CONFIGS, write_store
    from napari_dynaclr._napari.widgets._jobs import is_running
    from screenshots import _save, _settle

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    store = write_store(args.work / "store.zarr")
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1600, 960)
    app = QApplication.instance()
    _, main = viewer.window.add_plugin_dock_widget("napari-dynaclr", "DynaCLR")
    opening = main.open_embeddings(store)
    _wait(app, lambda: not is_running(opening))

    cond = main.conditions
    main.tabs.setCurrentWidget(cond)
    cond.reference.value = "uninfected1"
    cond.bin_hours.value = 3.0
    cond.run()
    _wait(app, lambda: not cond.job.running)
    zikv = next(i for i, r in enumerate(cond.result.table.to_dict(orient="records"))
                if r["cond_b"] == "ZIKV" and r["n_b"] >= 20)
    cond.table.selectRow(zikv)
    _settle(app, viewer, QWidget)
    _save(viewer.screenshot(canvas_only=False, flash=False), args.out / "napari_conditions.png", 1400)

    tv = main.time
    main.tabs.setCurrentWidget(tv)
    tv.load_config(CONFIGS / "pseudotime.yaml")
    tv.annotations.value = ANNOTATIONS
    tv.run()
    _wait(app, lambda: not tv.job.running)
    tv.track_table.selectRow(len(tv.tracks) // 2)
    _settle(app, viewer, QWidget)
    _save(viewer.screenshot(canvas_only=False, flash=False), args.out / "napari_time.png", 1400)
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
