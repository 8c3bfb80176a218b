"""The demo and the napari sample data remove only what they made: every entry is recorded with a content hash
in the folder's manifest before it appears, and ``demo --overwrite`` replaces nothing whose content does not
match the record — a user's real plate, tracks, checkpoint or config is never replaced, whatever its name."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from conftest import DATA, refused, snapshot
from napari_dynaclr.cli import main
from napari_dynaclr.core.synthetic import SyntheticSpec

TINY = SyntheticSpec(wells=("A/1",), fovs_per_well=1, timepoints=2, size=(128, 128), cells_per_fov=2)
DEMO_FLAGS = ["--no-umap", "--quiet", "--fovs-per-well", "1", "--cells-per-fov", "2", "--timepoints", "2"]


_snapshot, _refused = snapshot, refused


@pytest.fixture
def users_project(tmp_path, conformance_ckpt):
    """A folder with a user's real plate, tracks, checkpoint and predict.yml (the demo's names)."""
    proj = tmp_path / "my_project"
    proj.mkdir()
    shutil.copytree(DATA / "dev2d" / "plate.zarr", proj / "plate.zarr")
    shutil.copytree(DATA / "dev2d" / "tracks", proj / "tracks")
    shutil.copy(DATA / "dev2d" / "predict.yml", proj / "predict.yml")
    shutil.copy(conformance_ckpt("dev2d"), proj / "model.ckpt")
    return proj


def test_demo_overwrite_never_replaces_a_users_files_with_the_demos_names(users_project, capsys):
    before = _snapshot(users_project)
    _refused(capsys, ["demo", "--out", users_project, "--overwrite", *DEMO_FLAGS],
             "holds files the demo did not make (model.ckpt, plate.zarr, predict.yml, tracks)")
    assert _snapshot(users_project) == before


def test_demo_out_dot_in_a_folder_holding_only_the_users_tracks(users_project, capsys, monkeypatch):
    for name in ("plate.zarr", "model.ckpt", "predict.yml"):
        p = users_project / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    monkeypatch.chdir(users_project)
    before = _snapshot(users_project)
    _refused(capsys, ["demo", "--out", ".", "--overwrite", *DEMO_FLAGS], "holds files the demo did not make (tracks)")
    assert _snapshot(users_project) == before


@pytest.fixture(scope="module")
def earlier_demo(tmp_path_factory):
    """The inputs of an earlier demo (as ``demo`` writes them, with their manifest)."""
    from napari_dynaclr.demo import make_demo_inputs

    folder = tmp_path_factory.mktemp("earlier") / "demo"
    make_demo_inputs(folder, TINY, umap=False)
    return folder


@pytest.fixture
def demo_copy(earlier_demo, tmp_path):
    dst = tmp_path / "demo"
    shutil.copytree(earlier_demo, dst)
    return dst


def test_the_manifest_records_every_entry_with_its_content_hash(earlier_demo):
    from napari_dynaclr.core.output import content_hash

    doc = json.loads((earlier_demo / ".dynaclr-manifest.json").read_text())
    assert sorted(doc["entries"]) == ["model.ckpt", "plate.zarr", "predict.yml", "tracks", "truth.csv"]
    for name, record in doc["entries"].items():
        assert record["sha256"] == content_hash(earlier_demo / name)
    raw = hashlib.sha256(b"file\0" + hashlib.sha256((earlier_demo / "truth.csv").read_bytes()).hexdigest().encode())
    assert doc["entries"]["truth.csv"]["sha256"] == raw.hexdigest()


def _users_plate(p):
    shutil.rmtree(p)
    shutil.copytree(DATA / "dev2d" / "plate.zarr", p)


def _users_tracks(p):
    shutil.rmtree(p)
    shutil.copytree(DATA / "dev2d" / "tracks", p)


@pytest.mark.parametrize("name, replace", [
    ("truth.csv", lambda p: p.write_text("fov_name,track_id,t,cell_type\nA/1/0,1,0,mine\n")),
    ("predict.yml", lambda p: shutil.copy(DATA / "dev2d" / "predict.yml", p)),
    ("plate.zarr", _users_plate),
    ("tracks", _users_tracks),
    ("tracks", lambda p: (p / "A" / "1" / "0" / "tracks.csv").write_text("track_id,t,y,x\n1,0,5,5\n")),
    ("model.ckpt", lambda p: p.write_bytes(b"my real weights")),
])
def test_a_users_file_in_an_earlier_demo_folder_is_never_replaced(demo_copy, capsys, name, replace):
    replace(demo_copy / name)
    before = _snapshot(demo_copy)
    _refused(capsys, ["demo", "--out", demo_copy, "--overwrite", *DEMO_FLAGS],
             f"{name} is not what the demo wrote there", "refusing to replace it")
    assert _snapshot(demo_copy) == before


def test_an_extra_file_in_an_earlier_demo_folder_is_never_removed(demo_copy, capsys):
    (demo_copy / "analysis.ipynb").write_text("{}")
    before = _snapshot(demo_copy)
    _refused(capsys, ["demo", "--out", demo_copy, "--overwrite", *DEMO_FLAGS], "did not make (analysis.ipynb)")
    assert _snapshot(demo_copy) == before


def test_demo_overwrite_replaces_an_unchanged_earlier_demo_and_its_leftovers(demo_copy, capsys):
    from napari_dynaclr.core.output import content_hash

    (demo_copy / ".dynaclr-staging-0123456789ab" / "plate.zarr").mkdir(parents=True)  # a killed demo's staging
    assert main([str(a) for a in ["demo", "--out", demo_copy, "--overwrite", *DEMO_FLAGS]]) == 0, capsys.readouterr()
    entries = json.loads((demo_copy / ".dynaclr-manifest.json").read_text())["entries"]
    assert sorted(entries) == ["embeddings.zarr", "model.ckpt", "plate.zarr", "predict.yml", "tracks", "truth.csv"]
    assert all(rec["sha256"] == content_hash(demo_copy / n) for n, rec in entries.items())
    assert sorted(p.name for p in demo_copy.iterdir()) == [".dynaclr-manifest.json", *sorted(entries)]
    # the demo's own store, replaced by a later `predict --overwrite`, is no longer the demo's: kept
    shutil.rmtree(demo_copy / "embeddings.zarr")
    shutil.copytree(DATA / "dev2d" / "reference.zarr", demo_copy / "embeddings.zarr")
    capsys.readouterr()
    _refused(capsys, ["demo", "--out", demo_copy, "--overwrite", *DEMO_FLAGS], "embeddings.zarr is not what the demo")


# ------------------------------------------------------------------ the napari sample data


@pytest.fixture
def in_process_work(monkeypatch):
    """The sample data's build, with the work process's demo_inputs call run here."""
    import napari_dynaclr._napari.workers as workers
    from napari_dynaclr.child import _serve_demo_inputs

    class Work:
        def call(self, kind, *args, **kwargs):
            assert kind == "demo_inputs"
            return _serve_demo_inputs(None, *args, **kwargs)

    monkeypatch.setattr(workers, "work_process", lambda: Work())


def test_sample_data_never_uses_or_replaces_a_folder_it_did_not_make(users_project, in_process_work):
    from napari_dynaclr._napari.sample_data import build_demo, demo_complete
    from napari_dynaclr.errors import OutputError

    before = _snapshot(users_project)
    assert not demo_complete(users_project)  # the user's plate.zarr/tracks/model.ckpt/predict.yml are not the demo
    with pytest.raises(OutputError, match="napari sample data folder .* holds files the demo did not make"):
        build_demo(users_project, TINY)
    assert _snapshot(users_project) == before
    (users_project / "model.ckpt").unlink()  # an incomplete folder: still the user's
    before = _snapshot(users_project)
    with pytest.raises(OutputError, match="NAPARI_DYNACLR_CACHE"):
        build_demo(users_project, TINY)
    assert _snapshot(users_project) == before


def test_sample_data_completes_an_interrupted_build_of_its_own(demo_copy, in_process_work):
    from napari_dynaclr._napari.sample_data import build_demo, demo_complete

    assert demo_complete(demo_copy)
    (demo_copy / "predict.yml").unlink()  # killed before its last entry
    assert not demo_complete(demo_copy)
    paths = build_demo(demo_copy, TINY)
    assert demo_complete(demo_copy) and paths["config"].is_file()
