"""Tracks in the layouts users have: every layout gives the same cells as VisCy's folder of CSVs (dev2d); a layout
that is none of them is refused with one line naming the accepted ones."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import DATA
from napari_dynaclr.core.predict_yml import load_predict_yaml
from napari_dynaclr.core.track_layouts import ACCEPTED, TracksTable
from napari_dynaclr.errors import TracksError
from napari_dynaclr.predict.plan import plan_prediction

FOVS = ("A/1/0", "A/1/1", "B/2/0")


def _per_fov() -> dict[str, pd.DataFrame]:
    return {fov: pd.read_csv(DATA / "dev2d" / "tracks" / fov / "tracks.csv") for fov in FOVS}


def _cells(**changes) -> pd.DataFrame:
    cfg = load_predict_yaml(DATA / "dev2d" / "predict.yml").with_overrides(**changes)
    plan = plan_prediction(cfg)
    try:
        return plan.index_frame()
    finally:
        plan.close()


@pytest.fixture(scope="module")
def folder_cells():
    """The reference: VisCy's layout, tracks/<row>/<col>/<fov>/tracks.csv."""
    return _cells()


def _ultrack(df: pd.DataFrame) -> pd.DataFrame:
    """The table as ultrack's to_tracks_layer gives it: ``track_id, t, y, x, id, parent_track_id, parent_id``,
    indexed by the node id (its parquet export keeps the index)."""
    out = df[["track_id", "t", "y", "x", "id", "parent_track_id", "parent_id"]].copy()
    out.index = pd.Index(out["id"].to_numpy(), name="id")
    return out


def _folder_of_parquets(root):
    for fov, df in _per_fov().items():
        (root / fov).mkdir(parents=True)
        _ultrack(df).drop(columns=["id"]).to_parquet(root / fov / f"tracks_{fov.replace('/', '_')}.parquet")
    return root


def _flat_exports(root, suffix):
    root.mkdir()
    for fov, df in _per_fov().items():
        path = root / f"tracks_{fov.replace('/', '_')}{suffix}"
        if suffix == ".csv":
            _ultrack(df).to_csv(path, index=False)
        else:
            _ultrack(df).to_parquet(path)
    return root


def _one_table(path):
    table = pd.concat([df.assign(fov_name=fov) for fov, df in _per_fov().items()], ignore_index=True)
    if path.suffix == ".csv":
        table.to_csv(path, index=False)
    else:
        table.to_parquet(path)
    return path


LAYOUTS = {
    "folder-of-parquets": lambda tmp: _folder_of_parquets(tmp / "tracks"),
    "ultrack-exports-csv": lambda tmp: _flat_exports(tmp / "tracks", ".csv"),
    "ultrack-exports-parquet": lambda tmp: _flat_exports(tmp / "tracks", ".parquet"),
    "one-table-csv": lambda tmp: _one_table(tmp / "tracks.csv"),
    "one-table-parquet": lambda tmp: _one_table(tmp / "tracks.parquet"),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_gives_the_folders_cells(layout, folder_cells, tmp_path):
    tracks = LAYOUTS[layout](tmp_path)
    cells = _cells(tracks_path=tracks)
    pd.testing.assert_frame_equal(cells, folder_cells)


def test_the_one_table_keeps_each_fovs_row_order(folder_cells, tmp_path):
    """Rows of a FOV in table order, whatever the other FOVs' rows in between (VisCy keeps CSV order)."""
    table = pd.concat([df.assign(fov_name=fov) for fov, df in _per_fov().items()], ignore_index=True)
    order = np.argsort(table.groupby("fov_name").cumcount().to_numpy(), kind="stable")  # FOVs interleaved
    table.iloc[order].to_csv(tmp_path / "t.csv", index=False)
    pd.testing.assert_frame_equal(_cells(tracks_path=tmp_path / "t.csv"), folder_cells)


def test_a_table_in_memory_gives_the_same_cells(folder_cells):
    """The entry point for a napari Tracks layer: a DataFrame in the one-table layout."""
    frame = pd.concat([df.assign(fov_name="/" + fov) for fov, df in _per_fov().items()], ignore_index=True)
    table = TracksTable.from_frame(frame, "Tracks layer 'tracks'")
    cells = _cells(tracks_path=None, tracks_table=table)
    pd.testing.assert_frame_equal(cells, folder_cells)
    cfg = load_predict_yaml(DATA / "dev2d" / "predict.yml").with_overrides(tracks_path=None, tracks_table=table)
    assert cfg.input_paths()["tracks"] is None  # nothing on disk to protect


def test_an_older_ultrack_export_without_lineage_reads_parents_as_minus_one(folder_cells, tmp_path):
    root = tmp_path / "tracks"
    root.mkdir()
    for fov, df in _per_fov().items():
        df[["track_id", "t", "y", "x", "id"]].to_csv(root / f"tracks_{fov.replace('/', '_')}.csv", index=False)
    with pytest.warns(UserWarning, match="no parent_track_id or parent_id column"):
        cells = _cells(tracks_path=root)
    assert (cells["parent_track_id"] == -1).all() and (cells["parent_id"] == -1).all()
    pd.testing.assert_frame_equal(cells.drop(columns=["parent_track_id", "parent_id"]),
                                  folder_cells.drop(columns=["parent_track_id", "parent_id"]))


def test_one_ultrack_export_serves_a_one_fov_run(folder_cells, tmp_path):
    df = _per_fov()["B/2/0"]
    _ultrack(df).to_parquet(tmp_path / "export.parquet")
    cells = _cells(tracks_path=tmp_path / "export.parquet", include_wells=["B/2"])
    pd.testing.assert_frame_equal(cells, folder_cells[folder_cells["fov_name"] == "B/2/0"].reset_index(drop=True))
    with pytest.raises(TracksError, match="has no fov_name column, so it holds one FOV") as info:
        _cells(tracks_path=tmp_path / "export.parquet")
    assert ACCEPTED in str(info.value)


@pytest.mark.parametrize("what", ["empty-folder", "folder-of-other-files", "text-file", "table-without-a-fov"])
def test_a_layout_that_is_none_of_them_names_the_accepted_ones(what, tmp_path):
    if what == "empty-folder":
        tracks = tmp_path / "tracks"
        tracks.mkdir()
    elif what == "folder-of-other-files":
        tracks = tmp_path / "tracks"
        tracks.mkdir()
        (tracks / "notes.txt").write_text("tracks are elsewhere")
    elif what == "text-file":
        tracks = tmp_path / "tracks.txt"
        tracks.write_text("track_id,t\n")
    else:  # a table with fov_name, but not this plate's FOVs
        tracks = _one_table(tmp_path / "tracks.csv")
        pd.read_csv(tracks).assign(fov_name="C/9/0").to_csv(tracks, index=False)
    with pytest.raises(TracksError) as info:
        _cells(tracks_path=tracks)
    msg = str(info.value)
    assert "\n" not in msg and str(tracks) in msg
    if what != "table-without-a-fov":
        assert msg.endswith(ACCEPTED)
        for layout in ("<tracks>/<row>/<col>/<fov>/*.csv", "tracks_<row>_<col>_<fov>", "fov_name column",
                       "ultrack export"):
            assert layout in msg
    else:
        assert "no rows for FOV A/1/0" in msg


def test_a_table_checks_its_rows_as_a_csv_is_checked(tmp_path):
    """Problems name the table, the FOV and the file's data row."""
    path = _one_table(tmp_path / "tracks.csv")
    table = pd.read_csv(path)
    row = int(np.flatnonzero(table["fov_name"] == "A/1/1")[2])
    table.loc[row, "x"] = np.nan
    table.to_csv(path, index=False)
    with pytest.raises(TracksError, match=rf"tracks table {path} \(FOV A/1/1\): column 'x' has a missing/NaN value "
                                          rf"\(data row {row + 1}\)"):
        _cells(tracks_path=path)


def test_the_cli_predicts_from_one_table(conformance_ckpt, reference_arrays, tmp_path, capsys):
    from napari_dynaclr.cli import main
    from napari_dynaclr.core.store import read_store

    root = tmp_path / "case"
    shutil.copytree(DATA / "dev2d" / "plate.zarr", root / "plate.zarr")
    table = _one_table(root / "tracks.parquet")
    plain = ["predict", "--plate", str(root / "plate.zarr"), "--tracks", str(table), "--channels", "Phase3D",
             "--z-range", "1", "2", "--patch-size", "128", "--checkpoint", str(conformance_ckpt("dev2d")),
             "--output", str(tmp_path / "table.zarr"), "--device", "cpu", "--quiet"]
    assert main(plain) == 0, capsys.readouterr().err
    ours, ref = read_store(tmp_path / "table.zarr"), reference_arrays("dev2d")
    assert np.abs(ours.X - ref["features"]).max() <= 1e-4
    assert ours.uns["tracks_path"] == str(table)
