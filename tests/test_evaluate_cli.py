"""``napari-dynaclr evaluate smoothness | classifier``: the JSON it writes (VisCy's names and numbers), --apply,
and bad input: one line naming the problem, exit 2, nothing written."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from eval_data import ANNOTATIONS, STORES, expected, read, write_zarr
from napari_dynaclr.cli import main
from napari_dynaclr.evaluate.smoothness import STAT_NAMES

DEV2D = STORES["dev2d"]
CSV = ANNOTATIONS / "dev2d_by_fov_id.csv"


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_smoothness_json_holds_viscys_statistics(tmp_path, capsys):
    out = tmp_path / "s.json"
    code, stdout, err = _cli(capsys, "evaluate", "smoothness", DEV2D, "--order", "stored", "--metric", "euclidean",
                             "--json", out)
    assert code == 0, err
    got = json.loads(out.read_text())
    want = expected()["smoothness"]["dev2d"]["obs_order_as_stored"]["euclidean"]["stats"]
    for name in STAT_NAMES:
        assert got[name] == pytest.approx(want[name], rel=0, abs=1e-9)
    assert got["order"] == "stored" and got["metric"] == "euclidean" and "smoothness_score" in stdout
    assert "Observation names" not in err


def test_smoothness_per_group(tmp_path, capsys):
    adata = read("dev2d")
    adata.obs["marker"] = np.where(adata.obs["fov_name"].astype(str) == "A/1/0", "Phase3D", "RFP")
    store = write_zarr(adata, tmp_path / "marked.zarr")
    out = tmp_path / "g.json"
    code, stdout, err = _cli(capsys, "evaluate", "smoothness", store, "--group-by", "marker", "--distributions",
                             "--json", out)
    assert code == 0, err
    got = json.loads(out.read_text())
    assert got["group_by"] == "marker" and set(got["groups"]) == {"Phase3D", "RFP"}
    for stats in got["groups"].values():
        assert set(STAT_NAMES) <= set(stats) and len(stats["adjacent_frame_distribution"]) == stats["n_adjacent"]


@pytest.mark.parametrize("split", ["cell", "track"])
def test_classifier_json_and_apply(tmp_path, capsys, split):
    out, applied = tmp_path / "c.json", tmp_path / "pred.zarr"
    code, stdout, err = _cli(capsys, "evaluate", "classifier", DEV2D, "--annotations", CSV, "--task",
                             "infection_state", "--split", split, "--json", out, "--apply", applied)
    assert code == 0, err
    run = "stratified_liblinear" if split == "cell" else "grouped_fov_name_track_id_liblinear"
    rec = expected()["linear_classifier"]["dev2d"]["infection_state"]["runs"][run]
    got = json.loads(out.read_text())
    for name, value in rec["metrics"].items():
        assert got[name] == value, name
    assert got["n_samples"] == 67 and got["solver"] == "liblinear" and got["split"] == split
    # beside VisCy's numbers: the cells per class on each side and the accuracy over folds
    assert sum(got["val_counts"].values()) == got["n_val"] and sum(got["train_counts"].values()) == got["n_train"]
    assert got["cross_validation"]["grouped"] == (split == "track") and got["cross_validation"]["n_splits"] >= 2
    assert "cross-validated accuracy" in stdout
    back = read(applied)
    pw = rec["predict_with_classifier"]
    assert back.obs["predicted_infection_state"].astype(str).tolist() == pw["obs.predicted_infection_state"]
    np.testing.assert_allclose(back.obsm["predicted_infection_state_proba"],
                               pw["obsm.predicted_infection_state_proba"], rtol=0, atol=1e-8)
    assert list(back.uns["predicted_infection_state_classes"]) == ["infected", "uninfected"]
    assert back.n_obs == 72 and "X_projections" in back.obsm  # the whole store, predictions added
    assert _listing(tmp_path) == ["c.json", "pred.zarr"]


def test_classifier_three_classes_says_lbfgs(tmp_path, capsys):
    adata = read("synthetic")
    store = write_zarr(adata, tmp_path / "syn.zarr")
    out = tmp_path / "c.json"
    code, _, err = _cli(capsys, "evaluate", "classifier", store, "--annotations",
                        ANNOTATIONS / "synthetic_by_fov_id.csv", "--task", "cell_cycle_state", "--json", out, "--quiet")
    assert code == 0, err
    got = json.loads(out.read_text())
    want = expected()["linear_classifier"]["synthetic"]["cell_cycle_state"]["runs"]["stratified_lbfgs"]["metrics"]
    assert got["solver"] == "lbfgs" and any("liblinear" in n for n in got["notes"])
    assert "warning:" in err and "lbfgs" in err
    for name, value in want.items():
        assert got[name] == value, name


def _bad_cases(tmp_path):
    notstore = tmp_path / "plain"
    notstore.mkdir()
    (notstore / "a.txt").write_text("x")
    one_class = tmp_path / "one.csv"
    one_class.write_text("fov_name,id,infection_state\nA/1/0,1,infected\nA/1/0,2,infected\n")
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("fov_name,id,infection_state\nA/1/0,1,infected\nA/1/0,2,uninfected\nA/1/0,4,uninfected\n")
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "adir").mkdir()
    j = outdir / "r.json"
    s = ["evaluate", "smoothness"]
    c = ["evaluate", "classifier"]
    return [
        ("missing store", [*s, tmp_path / "nope.zarr", "--json", j], "not found"),
        ("not a store", [*s, notstore, "--json", j], "not a readable AnnData"),
        ("missing group column", [*s, DEV2D, "--group-by", "marker", "--json", j], "no obs column"),
        ("json is a folder", [*s, DEV2D, "--json", outdir / "adir"], "is a folder"),
        ("json folder missing", [*s, DEV2D, "--json", tmp_path / "no" / "r.json"], "does not exist"),
        ("missing CSV", [*c, DEV2D, "--annotations", tmp_path / "no.csv", "--task", "t", "--json", j], "not found"),
        ("unknown task", [*c, DEV2D, "--annotations", CSV, "--task", "cell_death_state", "--json", j],
         "no column 'cell_death_state'"),
        ("one class", [*c, DEV2D, "--annotations", one_class, "--task", "infection_state", "--json", j],
         "two classes"),
        ("too few for a class", [*c, DEV2D, "--annotations", tiny, "--task", "infection_state", "--json", j],
         "'infected' \\(1 cell\\)"),
        ("classifier on a non-store", [*c, notstore, "--annotations", CSV, "--task", "infection_state", "--json", j],
         "not a readable AnnData"),
        ("apply onto the input", [*c, DEV2D, "--annotations", CSV, "--task", "infection_state", "--json", j,
                                  "--apply", DEV2D, "--overwrite"], "is the input"),
        ("apply over a non-store", [*c, DEV2D, "--annotations", CSV, "--task", "infection_state", "--json", j,
                                    "--apply", notstore, "--overwrite"], "not an embedding store"),
        ("json over the CSV", [*c, DEV2D, "--annotations", CSV, "--task", "infection_state", "--json", CSV],
         "is the input annotations"),
    ]


def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    for name, argv, message in _bad_cases(tmp_path):
        before = {p: sorted(x.name for x in p.iterdir()) for p in (tmp_path, tmp_path / "out", tmp_path / "plain")}
        csv_before = CSV.read_bytes()
        code, stdout, err = _cli(capsys, *argv)
        assert code == 2, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("napari-dynaclr: error:"), (name, err)
        assert re.search(message, lines[0]), (name, lines[0])
        after = {p: sorted(x.name for x in p.iterdir()) for p in before}
        assert after == before, name
        assert CSV.read_bytes() == csv_before


def test_apply_existing_store_needs_overwrite(tmp_path, capsys):
    target = tmp_path / "pred.zarr"
    shutil.copytree(DEV2D, target)
    code, _, err = _cli(capsys, "evaluate", "classifier", DEV2D, "--annotations", CSV, "--task", "infection_state",
                        "--json", tmp_path / "c.json", "--apply", target)
    assert code == 2 and "already exists" in err and not (tmp_path / "c.json").exists()
    assert "predicted_infection_state" not in read(target).obs
    code, _, err = _cli(capsys, "evaluate", "classifier", DEV2D, "--annotations", CSV, "--task", "infection_state",
                        "--json", tmp_path / "c.json", "--apply", target, "--overwrite")
    assert code == 0, err
    assert "predicted_infection_state" in read(target).obs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "pred.zarr"]


def test_help_lists_evaluate(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "smoothness" in capsys.readouterr().out
