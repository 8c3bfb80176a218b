"""A store knows where it came from: ``uns`` records the run's inputs (absolute and relative to the store), the
family, the channels and markers; a store finds its plate when it was written away from its predict.yml, when
its folder moved together with the plate, when VisCy wrote it, and says why not otherwise."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import DATA
from napari_dynaclr.cli import main
from napari_dynaclr.core.provenance import find_inputs, read_uns


def _predict(case_dir: Path, out: Path, ckpt: Path, capsys) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    code = main(["predict", "-c", str(case_dir / "predict.yml"), "--ckpt-path", str(ckpt), "--output", str(out),
                 "--device", "cpu", "--quiet"])
    assert code == 0, capsys.readouterr().err
    return out


@pytest.fixture
def dev2d_store(case_copy, conformance_ckpt, tmp_path, capsys):
    """``predict -c case/predict.yml --output elsewhere/e.zarr``: the store away from its inputs."""
    root = case_copy("dev2d")
    return root, _predict(root, tmp_path / "elsewhere" / "e.zarr", conformance_ckpt("dev2d"), capsys)


def test_the_store_records_its_inputs(dev2d_store):
    root, store = dev2d_store
    uns = read_uns(store)
    assert (uns["data_path"], uns["tracks_path"]) == ("plate.zarr", "tracks")  # VisCy's keys, as given
    record = uns["dynaclr"]
    assert record["family"] == "classic" and list(record["channels"]) == ["Phase3D"]
    plate = record["inputs"]["plate"]
    assert plate == {"given": "plate.zarr", "path": str(root / "plate.zarr"), "from_store": "../dev2d/plate.zarr"}
    assert set(record["inputs"]) == {"plate", "tracks", "checkpoint", "config"}


def test_a_store_written_elsewhere_finds_its_plate(dev2d_store):
    from napari_dynaclr._napari.workers import open_store

    root, store = dev2d_store
    found = find_inputs(store)
    assert found.plate == root / "plate.zarr" and found.plates[""].how == "the recorded path"
    assert found.tracks.path == root / "tracks" and found.reason() == ""
    opened = open_store(store)  # what the plugin does on File > Open
    try:
        assert opened.plate is not None and opened.plate.path == root / "plate.zarr"
        assert opened.tracks_path == root / "tracks" and opened.plate_error is None
    finally:
        opened.close()


def test_a_store_whose_folder_moved_with_its_plate_finds_it(dev2d_store, tmp_path):
    root, store = dev2d_store
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(root, moved / "dev2d")
    shutil.move(store.parent, moved / "elsewhere")  # the folder holding both, moved elsewhere
    found = find_inputs(moved / "elsewhere" / "e.zarr")
    assert found.plate == moved / "dev2d" / "plate.zarr"
    assert found.plates[""].how == "recorded relative to the store (moved with it)"
    assert found.tracks.path == moved / "dev2d" / "tracks"


def test_a_store_without_its_plate_says_what_was_tried(dev2d_store, tmp_path):
    root, store = dev2d_store
    shutil.move(store, tmp_path / "alone.zarr")
    shutil.rmtree(root / "plate.zarr")
    found = find_inputs(tmp_path / "alone.zarr")
    assert found.plate is None
    reason = found.reason()
    assert reason.startswith("plate not found (tried ") and "\n" not in reason
    for tried in (root / "plate.zarr", tmp_path / "dev2d" / "plate.zarr", tmp_path / "plate.zarr"):
        assert str(tried) in reason


def test_a_store_written_by_viscy_finds_its_plate(tmp_path):
    """VisCy records data_path as the predict.yml gave it (relative to the predict.yml's folder): tried relative to
    the store's folder and its parents."""
    found = find_inputs(DATA / "dev2d" / "reference.zarr")
    assert found.plate == DATA / "dev2d" / "plate.zarr" and found.family is None
    nested = tmp_path / "exp" / "results" / "run1"
    nested.mkdir(parents=True)
    shutil.copytree(DATA / "dev2d" / "reference.zarr", nested / "reference.zarr")
    (tmp_path / "exp" / "plate.zarr").mkdir()
    found = find_inputs(nested / "reference.zarr")
    assert found.plate == tmp_path / "exp" / "plate.zarr" and found.plates[""].how.startswith("as given, relative to")
    # VisCy's Bag-of-Channels stores record nothing: not found, and why
    boc = find_inputs(DATA / "boc3d" / "reference.zarr")
    assert boc.plate is None and "records no plate" in boc.reason()


def test_a_bag_of_channels_store_records_the_plate_of_each_experiment(conformance_ckpt, tmp_path, capsys):
    case = tmp_path / "boc3d"
    for name in ("plate.zarr", "tracks"):
        shutil.copytree(DATA / "boc3d" / name, case / name)
    for name in ("predict.yml", "cell_index.parquet"):
        shutil.copy(DATA / "boc3d" / name, case / name)
    store = _predict(case, tmp_path / "out" / "boc.zarr", conformance_ckpt("boc3d"), capsys)
    record = read_uns(store)["dynaclr"]
    assert record["family"] == "bag_of_channels" and "data_path" not in read_uns(store)
    assert list(record["markers"]) == ["Phase3D", "SEC61B"]
    assert {k: (v["channel"], v["marker"]) for k, v in record["experiments"].items()} == {
        "boc3d_Phase3D": ("Phase3D", "Phase3D"), "boc3d_SEC61B": ("raw mCherry EX561 EM600-37", "SEC61B")}
    assert record["inputs"]["cell_index"]["path"] == str(case / "cell_index.parquet")
    found = find_inputs(store)
    assert {k: f.path for k, f in found.plates.items()} == {"boc3d_Phase3D": case / "plate.zarr",
                                                           "boc3d_SEC61B": case / "plate.zarr"}
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(tmp_path / "boc3d", moved / "boc3d")
    shutil.move(tmp_path / "out", moved / "out")
    assert find_inputs(moved / "out" / "boc.zarr").plate == moved / "boc3d" / "plate.zarr"
