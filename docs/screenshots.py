"""Regenerate the napari plugin screenshots in docs/images/ (needs a display: run under Xvfb).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/screenshots.py [--work /tmp/dynaclr-shots]

Builds the demo (synthetic plate, tracks, checkpoint), predicts with the core engine (PCA + UMAP),
opens the store in the DynaCLR dock at a laptop's (1366×768) and a monitor's (1920×1080) window size,
lasso-selects a group of cells, highlights one cell's track and saves: the whole window at both sizes,
the dock's Predict and Explore tabs, the scatter and the image overlays.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MAX_BYTES = 300_000
SIZES = ((1366, 768), (1920, 1080))  # a laptop, a monitor


def _save(img: np.ndarray, path: Path, max_width: int = 1100) -> None:
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(img[..., :3]))
    if im.width > max_width:
        im = im.resize((max_width, round(im.height * max_width / im.width)), Image.LANCZOS)
    for colors in (None, 256, 128, 64):
        out = im if colors is None else im.quantize(colors=colors)
        out.save(path, optimize=True)
        if path.stat().st_size <= MAX_BYTES:
            break
    print(f"{path.relative_to(HERE.parent)}: {im.width}x{im.height}, {path.stat().st_size // 1024} KB")


def _grab(widget) -> np.ndarray:
    from qtpy.QtGui import QImage

    img = widget.grab().toImage().convertToFormat(QImage.Format_RGBA8888)
    ptr = img.bits()
    ptr.setsize(img.sizeInBytes())
    return np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine() // 4, 4)[:, : img.width()].copy()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/dynaclr-shots"))
    ap.add_argument("--out", type=Path, default=HERE / "images")
    args = ap.parse_args(argv)

    from napari_dynaclr.core.predict_yml import load_predict_yaml
    from napari_dynaclr.core.synthetic import SyntheticSpec
    from napari_dynaclr.demo import make_demo_inputs
    from napari_dynaclr.predict.run import run_prediction

    shutil.rmtree(args.work, ignore_errors=True)
    spec = SyntheticSpec(wells=("A/1", "B/1"), fovs_per_well=1, timepoints=8, size=(256, 256), cells_per_fov=10)
    paths = make_demo_inputs(args.work, spec, umap=True)
    cfg = load_predict_yaml(paths["config"])
    cfg = cfg.with_overrides(accelerator="cpu")
    run_prediction(cfg, device="cpu")

    import napari
    from qtpy.QtCore import QEventLoop
    from qtpy.QtWidgets import QApplication, QWidget

    app = QApplication.instance() or QApplication([])
    args.out.mkdir(parents=True, exist_ok=True)
    for size in SIZES:
        viewer = napari.Viewer(show=True)
        viewer.window.resize(*size)
        _, main = viewer.window.add_plugin_dock_widget("napari-dynaclr", "DynaCLR")
        main.load_predict_yml(paths["config"])
        worker = main.open_embeddings(paths["output"])
        loop = QEventLoop()
        worker.finished.connect(loop.quit)
        loop.exec()
        view = main.explore
        s = main.session
        viewer.dims.set_point(0, 5)
        view.color_by("track_id")
        xy = view.xy()
        c = xy[np.argmax(xy[:, 0])]
        ang = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        span = xy.max(axis=0) - xy.min(axis=0)
        view.select_polygon(c + 0.3 * span * np.column_stack([np.cos(ang), np.sin(ang)]), mode="replace")
        rows = s.frames.rows(s.fov_name, 5)
        s.highlight(int(rows[len(rows) // 2]))
        while not view.scatter.ready:  # the plot's axes and key are shown in stages (plot_reveal.py): taken
            app.processEvents()  # before they are done, the window's plot lacked its x tick labels and key
        _settle(app, viewer, QWidget)
        tag = f"{size[0]}x{size[1]}"
        _save(viewer.screenshot(canvas_only=False, flash=False), args.out / f"napari_window_{tag}.png", size[0])
        if size == SIZES[0]:
            _save(viewer.screenshot(canvas_only=True, flash=False), args.out / "napari_overlays.png", 800)
            _save(_grab(view.scatter.native), args.out / "napari_scatter.png", 600)
            _save(_grab(main), args.out / "napari_explore_tab.png", 600)
            main.tabs.setCurrentIndex(0)
            main.advanced.expand(animate=False)
            _settle(app, viewer, QWidget)
            _save(_grab(main), args.out / "napari_predict_tab.png", 600)
        viewer.close()
    return 0


def _settle(app, viewer, QWidget) -> None:
    for top in app.topLevelWidgets():
        for w in top.findChildren(QWidget):
            if type(w).__name__ == "NapariQtNotification":
                w.close()  # toasts would cover the canvas
    for _ in range(30):
        app.processEvents()


if __name__ == "__main__":
    raise SystemExit(main())
