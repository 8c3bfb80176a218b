"""The bad-input matrix through the napari widget: one notification naming the problem, nothing written,
the widget ready again (the same core errors as the CLI matrix in test_bad_inputs.py)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from napari_fixtures import *  # noqa: F403
from napari_fixtures import load_yml, wait_worker

RUN_TIMEOUT_MS = 150_000


@pytest.fixture
def inputs(demo_inputs, tmp_path):
    """A writable copy of the demo inputs (plate, tracks, checkpoint, predict.yml)."""
    src = demo_inputs["config"].parent
    dst = tmp_path / "demo"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.zarr.tmp*"))
    return dst


def _csv(root, fn, fov="A/1/0"):
    path = root / "tracks" / fov / "tracks.csv"
    fn(pd.read_csv(path)).to_csv(path, index=False)


def _attrs(root, fn, fov="A/1/0"):
    path = root / "plate.zarr" / fov / ".zattrs"
    attrs = json.loads(path.read_text())
    fn(attrs)
    path.write_text(json.dumps(attrs))


def _nan_in_a_cell(root, fov="A/1/0"):
    """A NaN pixel at the centre of the first cell of *fov* at t = 0."""
    import zarr

    cell = pd.read_csv(root / "tracks" / fov / "tracks.csv").query("t == 0").iloc[0]
    arr = zarr.open_array(str(root / "plate.zarr" / fov / "0"), mode="r+")
    arr[0, 0, 0, int(round(cell["y"])), int(round(cell["x"]))] = float("nan")


CASES = [
    ("corrupt-checkpoint", lambda r, w: ((r / "model.ckpt").write_bytes(b"PK\x03\x04 broken"), None)[1], "model.ckpt"),
    ("missing-tracks-csv", lambda r, w: (r / "tracks" / "A" / "1" / "1" / "tracks.csv").unlink(), "no tracks CSV for FOV A/1/1"),
    ("non-numeric-column", lambda r, w: _csv(r, lambda d: d.assign(x=d["x"].astype(str).where(d.index != 2, "left"))),
     "column 'x' has non-numeric value 'left'"),
    ("nan-in-y", lambda r, w: _csv(r, lambda d: d.assign(y=d["y"].where(d.index != 1))), "column 'y' has a missing/NaN value"),
    ("duplicated-track-t", lambda r, w: _csv(r, lambda d: pd.concat([d, d.iloc[[0]]])), "share a (track_id, t) pair"),
    ("missing-channel", lambda r, w: (setattr(w.normalization, "value", "fov_statistics"),
                                      setattr(w.channels, "value", "Phase3D, DAPI")), "'DAPI'"),
    ("missing-statistics", lambda r, w: _attrs(r, lambda a: a["normalization"]["Phase3D"].pop("fov_statistics")),
     "FOV A/1/0: channel 'Phase3D' has no fov_statistics"),
    ("all-cells-filtered", lambda r, w: [_csv(r, lambda d: d.assign(y=3.0), fov) for fov in ("A/1/0", "A/1/1")],
     "no cells to predict"),
    ("patch-larger-than-image", lambda r, w: (setattr(w.patch, "value", 192), setattr(w.final_patch, "value", 192)),
     "does not fit FOV A/1/0"),
    ("output-exists", lambda r, w: (r / "out.zarr").mkdir(), "already exists"),
    ("nan-pixel", lambda r, w: _nan_in_a_cell(r), "tick 'allow non-finite values' (Predict > Advanced settings)"),
]


@pytest.mark.parametrize("case_id, setup, needle", CASES, ids=[c[0] for c in CASES])
def test_widget_bad_input(case_id, setup, needle, make_napari_viewer, inputs, qtbot, monkeypatch):
    from napari_dynaclr._napari.widgets import main as main_widget

    errors = []
    monkeypatch.setattr(main_widget, "show_error", errors.append)
    viewer = make_napari_viewer()
    _, main = viewer.window.add_plugin_dock_widget("napari-dynaclr", "DynaCLR")
    load_yml(qtbot, main, inputs / "predict.yml")
    out = inputs / "out.zarr"
    main.output.value = out
    main.device.value = "cpu"
    main.umap.value = False
    setup(inputs, main)
    existed_before = out.exists()
    worker = main.run()
    if worker is not None:
        wait_worker(qtbot, worker, RUN_TIMEOUT_MS)
    assert len(errors) == 1, errors
    assert needle in errors[0], errors[0]
    assert "\n" not in errors[0]
    assert " --" not in errors[0], errors[0]  # the dock's controls, never the command line's flags
    if not existed_before:
        assert not out.exists()
    assert not [p.name for p in inputs.iterdir() if p.name.startswith(".out.zarr")]
    assert main.worker is None and main.run_btn.enabled and not main.cancel_btn.enabled


def test_a_nan_pixel_runs_once_allowed_in_the_dock(make_napari_viewer, inputs, qtbot, monkeypatch):
    import anndata as ad
    import numpy as np

    from napari_dynaclr._napari.widgets import main as main_widget

    errors = []
    monkeypatch.setattr(main_widget, "show_error", errors.append)
    _nan_in_a_cell(inputs)
    viewer = make_napari_viewer()
    _, main = viewer.window.add_plugin_dock_widget("napari-dynaclr", "DynaCLR")
    load_yml(qtbot, main, inputs / "predict.yml")
    out = inputs / "out.zarr"
    main.output.value, main.device.value, main.umap.value = out, "cpu", False
    main.allow_nonfinite.value = True
    wait_worker(qtbot, main.run(), RUN_TIMEOUT_MS)
    assert errors == []
    adata = ad.read_zarr(out)
    nan_rows = ~np.isfinite(adata.X).all(axis=1)
    # the cells whose patch holds the pixel: NaN rows, recorded; the others are embedded as usual
    assert 1 <= nan_rows.sum() < adata.n_obs and adata.uns["nonfinite_rows"] == nan_rows.sum()
    assert np.isfinite(adata.obsm["X_pca"][~nan_rows]).all()
    assert main.session.table is not None and len(main.session.table) == adata.n_obs
