"""Output hazards: an output path may never destroy an input or anything that is not an embedding store,
whatever ``--overwrite`` or the predict.yml says. Each case: exit 2, one line naming the problem, and the
files on disk exactly as they were."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from conftest import refused, snapshot
from napari_dynaclr.cli import main

_snapshot = snapshot


@pytest.fixture
def case(case_copy, conformance_ckpt):
    root = case_copy("dev2d")
    ckpt = root / "model.ckpt"
    ckpt.write_bytes(Path(conformance_ckpt("dev2d")).read_bytes())
    return root


def _predict(root: Path, *extra) -> list[str]:
    return ["predict", "-c", str(root / "predict.yml"), "--ckpt-path", str(root / "model.ckpt"), "--device", "cpu",
            "--quiet", *map(str, extra)]


_refused = refused


@pytest.mark.parametrize("target, needle", [
    ("plate.zarr", "is the input plate"),
    ("tracks", "is the input tracks"),
    ("model.ckpt", "is the input checkpoint"),
    ("predict.yml", "is the input config"),
    ("plate.zarr/emb.zarr", "lies inside the input plate"),
    ("plate.zarr/A/1/0/emb.zarr", "lies inside the input plate"),
    ("tracks/A/1/0/emb.zarr", "lies inside the input tracks"),
    (".", "contains the input"),
    ("tracks/../plate.zarr", "is the input plate"),
])
def test_an_input_is_never_an_output_even_with_overwrite(case, capsys, target, needle):
    before = _snapshot(case)
    _refused(capsys, _predict(case, "--output", case / target, "--overwrite"), needle)
    assert _snapshot(case) == before


def test_a_predict_yml_pointing_its_output_at_the_plate_is_refused(case, capsys):
    doc = yaml.safe_load((case / "predict.yml").read_text())
    for cb in doc["trainer"]["callbacks"]:
        if cb["class_path"].endswith("EmbeddingWriter"):
            cb["init_args"].update(output_path=str(case / "plate.zarr"), overwrite=True)
    (case / "predict.yml").write_text(yaml.safe_dump(doc))
    before = _snapshot(case)
    _refused(capsys, ["predict", "-c", str(case / "predict.yml"), "--ckpt-path", str(case / "model.ckpt"),
                      "--device", "cpu", "--quiet"], "is the input plate")
    assert _snapshot(case) == before


def test_a_symlink_to_an_input_is_refused(case, capsys, tmp_path):
    link = tmp_path / "looks-new.zarr"
    link.symlink_to(case / "plate.zarr")
    before = _snapshot(case)
    _refused(capsys, _predict(case, "--output", link, "--overwrite"), "symbolic link")
    assert _snapshot(case) == before and link.is_symlink()


def test_a_dangling_symlink_is_refused_before_the_prediction(case, capsys, tmp_path):
    link = tmp_path / "dangling.zarr"
    link.symlink_to(tmp_path / "nowhere.zarr")
    _refused(capsys, _predict(case, "--output", link), "symbolic link")
    assert not (tmp_path / "nowhere.zarr").exists()


@pytest.mark.parametrize("make, needle", [
    (lambda d: (d / "thesis.tex").write_text("years of work"), "a folder with 1 entry: thesis.tex"),
    (lambda d: [(d / f"f{i}.txt").write_text("x") for i in range(5)], "a folder with 5 entries"),
    (lambda d: (d / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}'),
     "a zarr store that is not an embedding store"),
])
def test_overwrite_replaces_only_an_embedding_store(case, capsys, tmp_path, make, needle):
    out = tmp_path / "results"
    out.mkdir()
    make(out)
    before = _snapshot(out)
    _refused(capsys, _predict(case, "--output", out, "--overwrite"), needle, "refusing to replace it")
    assert _snapshot(out) == before


def test_overwrite_refuses_a_plate_that_is_not_an_input(case, capsys, tmp_path):
    import shutil

    other = tmp_path / "other_plate.zarr"
    shutil.copytree(case / "plate.zarr", other)
    before = _snapshot(other)
    _refused(capsys, _predict(case, "--output", other, "--overwrite"), "an OME-Zarr HCS plate")
    assert _snapshot(other) == before


def test_overwrite_replaces_an_embedding_store_and_a_long_legal_name_works(case, capsys, tmp_path):
    from napari_dynaclr.core.store import read_store

    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / ("e" * 245 + ".zarr")  # 250 bytes: legal, and longer than our old hidden names allowed
    assert main(_predict(case, "--output", out)) == 0
    first = read_store(out).X.copy()
    assert main(_predict(case, "--output", out, "--overwrite", "--batch-size", "8")) == 0
    assert (read_store(out).X == first).all()
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no lock, partial or old store left
    capsys.readouterr()


def test_a_name_too_long_for_the_file_system_is_refused_up_front(case, capsys, tmp_path):
    _refused(capsys, _predict(case, "--output", tmp_path / ("e" * 300)), "longer than this file system allows")


@pytest.mark.parametrize("setup, needle", [
    (lambda d: (d / "thesis.tex").write_text("years of work"), "holds files the demo did not make (thesis.tex)"),
    (lambda d: (d / "plate.zarr").mkdir() or (d / "notes.md").write_text("x"), "notes.md"),
])
def test_demo_overwrite_never_empties_a_folder_it_did_not_make(tmp_path, capsys, monkeypatch, setup, needle):
    setup(tmp_path)
    before = _snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    _refused(capsys, ["demo", "--out", ".", "--overwrite", "--no-umap", "--quiet"], needle)
    assert _snapshot(tmp_path) == before and os.getcwd() == str(tmp_path)


def test_demo_out_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("keep")
    _refused(capsys, ["demo", "--out", str(f), "--overwrite", "--quiet"], "is a file")
    assert f.read_text() == "keep"
