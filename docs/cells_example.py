"""The worked example of docs/napari.md ("Find the cells behind a cluster"): label a few demo cells, let the
classifier find the rest, and save the Cells tab's screenshots (needs a display: run under Xvfb).

    xvfb-run -a -s "-screen 0 2000x1200x24" .venv/bin/python docs/cells_example.py [--labels 3]

Builds the demo (two cell types, an infection reporter), predicts it, opens it in the DynaCLR dock at 1366×768,
then for each question (cell type; infected or not) labels --labels cells per class chosen at random (seed 0),
waits for the live classifier and prints its accuracy on every other cell against the demo's hidden truth, and
its cell- and track-split validation accuracies. Also computes the temporal smoothness and shows a gallery of
the cells the classifier calls infected.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def _wait(app, cells, name, timeout=300.0):
    t0 = time.time()
    while cells.worker(name) is None and time.time() - t0 < 5:
        app.processEvents()
    while cells.worker(name) is not None:
        if time.time() - t0 > timeout:
            raise TimeoutError(name)
        app.processEvents()
        time.sleep(0.01)
    for _ in range(20):
        app.processEvents()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/dynaclr-cells"))
    ap.add_argument("--out", type=Path, default=HERE / "images")
    ap.add_argument("--labels", type=int, default=3, help="cells labelled per class")
    args = ap.parse_args(argv)

    from napari_dynaclr._napari.sample_data import DEMO_SPEC
    from napari_dynaclr.core.predict_yml import load_predict_yaml
    from napari_dynaclr.demo import make_demo_inputs
    from napari_dynaclr.predict.run import run_prediction

    shutil.rmtree(args.work, ignore_errors=True)
    paths = make_demo_inputs(args.work, DEMO_SPEC, umap=True)
    run_prediction(load_predict_yaml(paths["config"]).with_overrides(accelerator="cpu"), device="cpu")

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_dynaclr._napari.cellmodel import UNASSIGNED
    from napari_dynaclr._napari.widgets._jobs import is_running
    from screenshots import _grab as grab  # the screenshot helpers beside this script
    from screenshots import _save as save

    app = QApplication.instance() or QApplication([])
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1366, 768)
    _, main = viewer.window.add_plugin_dock_widget("napari-dynaclr", "DynaCLR")
    main.load_predict_yml(paths["config"])
    worker = main.open_embeddings(paths["output"])
    while is_running(worker):
        app.processEvents()
        time.sleep(0.01)
    for _ in range(50):
        app.processEvents()
    s, cells = main.session, main.cells
    cells.follow_clicks.value = False
    cells.follow_selection.value = False
    main.tabs.setCurrentWidget(cells)
    cells.classifier_box.expand(animate=False)
    truth = s.table[["fov_name", "track_id", "t"]].astype({"fov_name": str}).merge(
        pd.read_csv(paths["truth"]), on=["fov_name", "track_id", "t"], how="left")
    rng = np.random.default_rng(0)
    questions = {
        "cell type": {"round": truth["cell_type"].to_numpy() == "A", "elongated": truth["cell_type"].to_numpy() == "B"},
        "infection": {"infected": truth["infected"].to_numpy().astype(bool),
                      "uninfected": ~truth["infected"].to_numpy().astype(bool)},
    }
    print(f"demo: {len(s.table)} cells in {s.table['fov_name'].nunique()} FOVs, {args.labels} labelled per class")
    for question, classes in questions.items():
        s.add_columns({"annotation": pd.Categorical([UNASSIGNED] * len(s.table), categories=[UNASSIGNED])})
        labelled = []
        for name, mask in classes.items():
            rows = rng.choice(np.flatnonzero(mask), size=args.labels, replace=False)
            s.select(rows)
            main.explore.assign_selection(name)
            labelled.extend(rows.tolist())
        _wait(app, cells, "classifier")
        predicted = s.table["predicted_annotation"].astype(str).to_numpy()
        want = np.full(len(predicted), "", dtype=object)
        for name, mask in classes.items():
            want[mask] = name
        others = np.setdiff1d(np.arange(len(predicted)), labelled)
        accuracy = float((predicted[others] == want[others]).mean())
        m = cells.classifier["metrics"]
        print(f"{question}: accuracy on the {len(others)} unlabelled cells {accuracy:.3f}; validation accuracy "
              f"cell split {m['cell']['val_accuracy']:.3f}, track split {m['track']['val_accuracy']:.3f}")
    s.select(np.flatnonzero(s.table["predicted_annotation"].astype(str).to_numpy() == "infected"))
    cells.show_gallery()
    _wait(app, cells, "gallery")
    cells.smooth_box.expand(animate=False)
    cells.compute_smoothness()
    _wait(app, cells, "smoothness")
    st = cells.smoothness["stats"]
    print(f"smoothness (cosine, time order): score {st['smoothness_score']:.3f}, "
          f"dynamic range {st['dynamic_range']:.3f}")
    for _ in range(30):
        app.processEvents()
    args.out.mkdir(parents=True, exist_ok=True)
    save(grab(main), args.out / "napari_cells_tab.png", 600)
    save(viewer.screenshot(canvas_only=False, flash=False), args.out / "napari_cells_window.png", 1366)
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
