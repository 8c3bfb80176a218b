"""Annotation join parity with VisCy's ``load_annotation_anndata`` (row for row, missing-value types included),
the mitosis tolerance cases, bad CSVs and the save → join round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eval_data import ANNOTATIONS, expected, read
from napari_dynaclr.errors import AnnotationError, OutputError
from napari_dynaclr.evaluate.annotations import join_annotations, join_key, labelled, read_annotations, save_annotations

CASES = [(store, csv, task)
         for store, rec in expected()["annotation_join"].items()
         for csv, tasks in rec.items() if csv != "csv_construction"
         for task in tasks]


@pytest.fixture(scope="module")
def stores():
    return {name: read(name) for name in ("dev2d", "dev3d2ch", "synthetic")}


@pytest.mark.parametrize(("store", "csv", "task"), CASES, ids=["/".join(c) for c in CASES])
def test_join_matches_viscy_row_for_row(stores, store, csv, task):
    rec = expected()["annotation_join"][store][csv][task]
    obs = stores[store].obs
    got = join_annotations(obs, ANNOTATIONS / csv, task)
    assert list(join_key(obs, read_annotations(ANNOTATIONS / csv))) == rec["csv_key_columns"]
    assert got.index.equals(obs.index) and str(got.dtype) == rec["obs_column_dtype"]
    assert len(got) == rec["n_obs"] == len(rec["values"])
    for pos, (want, have) in enumerate(zip(rec["values"], got.tolist())):
        assert (pd.isna(have) if want is None else have == want), (pos, want, have)
    assert int(got.isna().sum()) == rec["n_missing"]
    assert sorted({type(v).__name__ for v in got if pd.isna(v)}) == rec["missing_value_python_types"]
    assert got.value_counts().to_dict() == rec["value_counts"]


@pytest.mark.parametrize("store", ["dev2d", "dev3d2ch", "synthetic"])
def test_mitosis_cases(stores, store):
    cons = expected()["annotation_join"][store]["csv_construction"]
    obs = stores[store].obs
    joined = {t: join_annotations(obs, ANNOTATIONS / cons["by_fov_t_track"], t) for t in cons["tasks"]}
    assert len(cons["mitosis_cases"]) == 9
    for case in cons["mitosis_cases"]:
        pos = case["obs_position"]
        assert [int(obs["y"].iloc[pos]), int(obs["x"].iloc[pos])] == case["obs_yx"]
        for task, want in case["joined_value"].items():
            have = joined[task].iloc[pos]
            assert (have is pd.NA if want is None else have == want), (case["case"], task, have, want)


def test_labelled_drops_missing_and_unknown():
    assert labelled(["a", None, np.nan, pd.NA, "unknown", "b"]).tolist() == [True, False, False, False, False, True]


def test_bad_csvs(tmp_path, stores):
    obs = stores["dev2d"].obs
    with pytest.raises(AnnotationError, match="not found"):
        read_annotations(tmp_path / "missing.csv")
    (tmp_path / "nofov.csv").write_text("id,infection_state\n1,a\n")
    with pytest.raises(AnnotationError, match="no 'fov_name' column"):
        read_annotations(tmp_path / "nofov.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(AnnotationError, match="cannot be read"):
        read_annotations(tmp_path / "empty.csv")
    with pytest.raises(AnnotationError, match="no column 'cell_death_state'"):
        join_annotations(obs, ANNOTATIONS / "dev2d_by_fov_id.csv", "cell_death_state")
    (tmp_path / "nokey.csv").write_text("fov_name,t,infection_state\nA/1/0,0,a\n")
    with pytest.raises(AnnotationError, match="lacks track_id"):
        join_annotations(obs, tmp_path / "nokey.csv", "infection_state")
    (tmp_path / "dup_noyx.csv").write_text("fov_name,t,track_id,s\nA/1/0,0,1,a\nA/1/0,0,1,b\n")
    with pytest.raises(AnnotationError, match="duplicate .* no 'y'"):
        join_annotations(obs, tmp_path / "dup_noyx.csv", "s")
    (tmp_path / "badid.csv").write_text("fov_name,id,s\nA/1/0,x,a\n")
    with pytest.raises(AnnotationError, match="whole numbers"):
        join_annotations(obs, tmp_path / "badid.csv", "s")


@pytest.mark.parametrize("key", ["id", "track"])
def test_save_then_join_round_trip(tmp_path, stores, key):
    obs = stores["dev2d"].obs
    labels = join_annotations(obs, ANNOTATIONS / "dev2d_by_fov_id.csv", "infection_state").to_numpy()
    path = save_annotations(tmp_path / "mine.csv", obs, {"infection_state": labels}, key=key)
    back = join_annotations(obs, path, "infection_state")
    assert [None if pd.isna(v) else v for v in back] == [None if pd.isna(v) else v for v in labels]
    frame = pd.read_csv(path)
    assert frame.columns[0] == "fov_name" and ("id" in frame.columns) == (key == "id")
    with pytest.raises(OutputError, match="already exists"):
        save_annotations(path, obs, {"infection_state": labels})
    assert not list(tmp_path.glob(".*partial*"))
