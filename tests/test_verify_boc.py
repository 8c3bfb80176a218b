"""Verify a Bag-of-Channels prediction against VisCy's reference: string key columns (``experiment``) stay strings
in every per-cell table of the report, and the Verify panel shows them without an error."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import DATA
from napari_dynaclr.core.predict_yml import load_predict_yaml
from napari_dynaclr.predict.run import run_prediction
from napari_dynaclr.verify import compare_stores, map_cell_values

REFERENCE = DATA / "boc2d_mip" / "reference.zarr"


@pytest.fixture(scope="module")
def boc_prediction(conformance_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("boc-verify") / "prediction.zarr"
    cfg = load_predict_yaml(DATA / "boc2d_mip" / "predict.yml")
    run_prediction(cfg.with_overrides(ckpt_path=conformance_ckpt("boc2d_mip"), output_path=out, accelerator="cpu"))
    return out


def test_report_keeps_string_keys_as_strings(boc_prediction):
    from napari_dynaclr.core.store import read_store

    report = compare_stores(boc_prediction, REFERENCE)
    assert report.passed and report.rows.n_common == 84
    assert report.rows.key_columns == ["fov_name", "track_id", "t", "experiment"]
    assert report.text_columns == ["fov_name", "experiment"]
    for frame in (report.cells, report.worst_cells(10), report.only_in_prediction, report.only_in_reference):
        for col in frame.columns:
            if col in report.text_columns:
                assert all(isinstance(v, str) for v in frame[col]), col
            else:
                assert pd.api.types.is_numeric_dtype(frame[col]) or frame[col].dtype == bool, col
    assert set(report.cells["experiment"]) == {"boc2d_Phase3D", "boc2d_G3BP1"}
    worst = json.loads(report.to_json(worst=5))["worst_cells"]
    assert all(isinstance(r["experiment"], str) and isinstance(r["track_id"], int) for r in worst)
    text = report.format(worst=3)
    assert "PASS" in text and "boc2d_" in text
    # a cell table of the store (as the explorer holds it: categorical strings) gets each sample's own value
    obs = read_store(boc_prediction).obs
    table = obs.assign(experiment=pd.Categorical(obs["experiment"].astype(str)))
    values = map_cell_values(report, table, "max_abs")
    np.testing.assert_array_equal(values, report.cells.sort_values("prediction_row")["max_abs"].to_numpy())


def test_verify_panel_on_a_boc_store(boc_prediction, make_napari_viewer, qtbot):
    pytest.importorskip("napari")
    from napari.utils.notifications import notification_manager
    from qtpy.QtCore import Qt

    from napari_dynaclr._napari.widgets.verify_panel import VerifyWidget

    viewer = make_napari_viewer()
    panel = VerifyWidget(viewer)
    qtbot.addWidget(panel)
    before = len(notification_manager.records)
    panel.prediction_combo.setCurrentIndex(panel.prediction_combo.findData("file"))
    panel.prediction_edit.setText(str(boc_prediction))
    panel.reference_edit.setText(str(REFERENCE))
    assert panel.run() is not None
    qtbot.waitUntil(lambda: panel.state == "ready" and (panel.report is not None or bool(panel.last_error)),
                    timeout=120_000)
    assert panel.last_error is None and panel.report.passed
    assert notification_manager.records[before:] == []  # no error notification
    ct = panel.cells_table
    assert ct.rowCount() == 84 and panel.color_button.isEnabled()
    headers = [ct.horizontalHeaderItem(j).text() for j in range(ct.columnCount())]
    col = headers.index("experiment")
    assert {ct.item(i, col).text() for i in range(ct.rowCount())} == {"boc2d_Phase3D", "boc2d_G3BP1"}
    ct.sortItems(col, Qt.SortOrder.AscendingOrder)  # sorting by the text column works
    assert ct.item(0, col).text() == "boc2d_G3BP1"
