"""Every writer is safe, not only the prediction's store: reports (``--json``), ``--apply`` stores, cell indexes,
Bag-of-Channels outputs and the dock's saves are checked against every input the run reads (resolved as the run
resolves it), never written inside a zarr store, replaced atomically, and a failed write (a file-size limit, a
full disk) is one line with the old file intact."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import napari_dynaclr
from conftest import DATA, refused, snapshot
from napari_dynaclr.cli import main

SRC = Path(napari_dynaclr.__file__).resolve().parents[1]  # (the subprocess runs the code under test)


_snapshot = snapshot


def _refused(capsys, argv, *needles) -> str:
    return refused(capsys, argv, *needles, allow_warnings=True)


def _adata(value: float = 1.0, n: int = 4):
    from napari_dynaclr.core.store import build_anndata

    obs = pd.DataFrame({"fov_name": ["A/1/0"] * n, "track_id": range(n), "t": 0, "id": range(n),
                        "parent_track_id": -1, "parent_id": -1, "y": 5, "x": 5})
    return build_anndata(obs, np.full((n, 8), value, np.float32), np.full((n, 2), value, np.float32))


@pytest.fixture
def stores(tmp_path):
    from napari_dynaclr.core.store import write_store

    pred, ref = write_store(_adata(1.0), tmp_path / "p.zarr"), write_store(_adata(1.0), tmp_path / "ref.zarr")
    return pred, ref


# ------------------------------------------------------------------ verify --json


@pytest.mark.parametrize("target, needle", [
    ("p.zarr/.zattrs", "lies inside the input prediction"),
    ("ref.zarr/X/.zarray", "lies inside the input reference"),
    ("p.zarr", "is the input prediction"),
    ("ref.zarr/obs/new.json", "lies inside the input reference"),
])
def test_verify_json_never_writes_into_the_stores_it_compares(stores, tmp_path, capsys, target, needle):
    before = _snapshot(tmp_path)
    _refused(capsys, ["verify", *stores, "--json", tmp_path / target, "--overwrite"], needle)
    assert _snapshot(tmp_path) == before


def test_verify_json_is_refused_before_the_comparison(stores, tmp_path, capsys, monkeypatch):
    import napari_dynaclr.verify as verify

    monkeypatch.setattr(verify, "compare_stores", lambda *a, **k: pytest.fail("compared before the check"))
    _refused(capsys, ["verify", *stores, "--json", tmp_path / "p.zarr/.zattrs"], "lies inside the input")


def test_verify_json_replaces_its_own_report_but_no_other_file(stores, tmp_path, capsys):
    report = tmp_path / "report.json"
    assert main(["verify", *map(str, stores), "--json", str(report)]) == 0
    assert report.read_text().startswith('{\n  "written_by": "napari-dynaclr')
    report.write_bytes(report.read_bytes().replace(b'"passed": true', b'"passed": "edited"'))
    assert main(["verify", *map(str, stores), "--json", str(report)]) == 0  # a rerun replaces our report
    assert b'"edited"' not in report.read_bytes()
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    capsys.readouterr()
    _refused(capsys, ["verify", *stores, "--json", notes], "already exists", "pass --overwrite")
    assert notes.read_text() == '{"mine": 1}'
    assert main(["verify", *map(str, stores), "--json", str(notes), "--overwrite"]) == 0
    assert "written_by" in notes.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.json", "p.zarr", "ref.zarr", "report.json"]
    capsys.readouterr()


@pytest.fixture
def project(case_copy, conformance_ckpt):
    root = case_copy("dev2d")
    shutil.copy(conformance_ckpt("dev2d"), root / "model.ckpt")
    return root


@pytest.mark.parametrize("target, overwrite, needle", [
    ("model.ckpt", False, "already exists"),
    ("model.ckpt", True, "not a text file"),
    ("tracks/A/1/0/tracks.csv", False, "already exists"),
    ("predict.yml", False, "already exists"),
    ("plate.zarr", True, "is a folder"),
    ("plate.zarr/A/1/report.json", True, "lies inside the zarr store"),
])
def test_a_report_never_lands_on_a_users_file_or_inside_a_plate(stores, project, capsys, target, overwrite, needle):
    """The user's checkpoint, tracks, config and plate are not verify's inputs: still never replaced by a report
    without --overwrite, a binary file or a folder never, and nothing is written inside a zarr store."""
    before = _snapshot(project)
    _refused(capsys, ["verify", *stores, "--json", project / target, *(["--overwrite"] if overwrite else [])], needle)
    assert _snapshot(project) == before


def test_reports_of_evaluate_never_replace_their_inputs(project, tmp_path, capsys):
    from napari_dynaclr.core.store import write_store

    store = write_store(_adata(1.0, n=6), tmp_path / "s.zarr")
    csv = tmp_path / "ann.csv"
    csv.write_text("fov_name,id,state\nA/1/0,0,a\nA/1/0,1,b\n")
    before = _snapshot(tmp_path)
    _refused(capsys, ["evaluate", "classifier", store, "--annotations", csv, "--task", "state", "--json", csv,
                      "--overwrite"], "is the input annotations")
    _refused(capsys, ["evaluate", "smoothness", store, "--json", store / "obs" / ".zattrs", "--overwrite"],
             "lies inside the input store")
    _refused(capsys, ["evaluate", "classifier", store, "--annotations", csv, "--task", "state", "--json",
                      tmp_path / "c.json", "--apply", store / "copy.zarr"], "lies inside the input store")
    assert _snapshot(tmp_path) == before


def test_a_symlinked_output_folder_is_followed_to_the_real_path(stores, project, tmp_path, capsys):
    real_out = tmp_path / "results"
    real_out.mkdir()
    (tmp_path / "link").symlink_to(real_out)
    assert main(["verify", *map(str, stores), "--json", str(tmp_path / "link" / "r.json")]) == 0
    assert (real_out / "r.json").is_file() and sorted(p.name for p in real_out.iterdir()) == ["r.json"]
    (tmp_path / "into-plate").symlink_to(project / "plate.zarr" / "A")
    capsys.readouterr()
    before = _snapshot(project)
    _refused(capsys, ["predict", "-c", project / "predict.yml", "--ckpt-path", project / "model.ckpt",
                      "--output", tmp_path / "into-plate" / "emb.zarr", "--device", "cpu", "--quiet"],
             "lies inside the input plate")
    assert _snapshot(project) == before


# ------------------------------------------------------------------ a file-size limit (EFBIG), a full disk


def _cli_with_file_size_limit(limit: int, *argv, cwd=None) -> subprocess.CompletedProcess:
    code = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        from napari_dynaclr.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


def test_a_report_past_a_file_size_limit_leaves_the_old_one_intact(stores, tmp_path):
    report = tmp_path / "report.json"
    assert main(["verify", *map(str, stores), "--json", str(report)]) == 0
    old = report.read_bytes()
    assert len(old) > 2000
    proc = _cli_with_file_size_limit(1000, "verify", *stores, "--json", report)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert err[0] == f"napari-dynaclr: error: cannot write {report}: File too large"
    assert report.read_bytes() == old  # not truncated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.zarr", "ref.zarr", "report.json"]


def test_a_store_past_a_file_size_limit_is_one_line_and_keeps_the_old_store(project, tmp_path):
    out = tmp_path / "emb.zarr"
    predict = ["predict", "-c", project / "predict.yml", "--ckpt-path", project / "model.ckpt", "--output", out,
               "--device", "cpu", "--quiet"]
    assert main(list(map(str, predict))) == 0
    before = _snapshot(out)
    proc = _cli_with_file_size_limit(20000, *predict, "--overwrite")
    err = [line for line in proc.stderr.strip().splitlines() if "warning:" not in line]
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert err[0] == f"napari-dynaclr: error: cannot write {out}: File too large", err
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev2d", "emb.zarr"]


def test_a_report_on_a_full_disk_leaves_the_old_one_intact(stores, tmpfs, capsys):
    tiny_disk = tmpfs("256k")
    report = tiny_disk / "report.json"
    assert main(["verify", *map(str, stores), "--json", str(report)]) == 0
    old = report.read_bytes()
    with open(tiny_disk / "filler", "wb", buffering=0) as fh, contextlib.suppress(OSError):  # fill what is left
        while True:
            fh.write(b"\0" * 4096)
    capsys.readouterr()
    _refused(capsys, ["verify", *stores, "--json", report], f"cannot write {report}: No space left on device")
    assert report.read_bytes() == old
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler", "report.json"]


# ------------------------------------------------------------------ a mount point


@pytest.fixture
def mount_point(tmp_path, monkeypatch):
    """An output folder that is a mount point: a real tmpfs where this process may mount one, else reported as
    one by os.path.ismount."""
    mnt = tmp_path / "emb.zarr"
    mnt.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                                   capture_output=True).returncode == 0
    if not mounted:
        real = os.path.ismount
        monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == mnt or real(p))
    yield mnt
    if mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_overwrite_of_a_mount_point_is_refused_before_the_prediction(project, mount_point, capsys, monkeypatch):
    import napari_dynaclr.predict.run as run

    monkeypatch.setattr(run, "plan_for", lambda *a, **k: pytest.fail("planned a run onto a mount point"))
    _refused(capsys, ["predict", "-c", project / "predict.yml", "--ckpt-path", project / "model.ckpt", "--output",
                      mount_point, "--overwrite", "--device", "cpu", "--quiet"], "is a mount point")
    assert os.path.ismount(mount_point)


# ------------------------------------------------------------------ Bag of Channels: the plates the run reads


@pytest.fixture
def boc(tmp_path, conformance_ckpt):
    root = tmp_path / "boc"
    root.mkdir()
    for name in ("plate.zarr", "tracks"):
        shutil.copytree(DATA / "boc2d_mip" / name, root / name)
    for name in ("collection.yml", "cell_index.parquet", "predict.yml"):
        shutil.copy(DATA / "boc2d_mip" / name, root / name)
    for p in root.rglob("*"):
        p.chmod(p.stat().st_mode | 0o200)
    return root, conformance_ckpt("boc2d_mip")


BOC_GEOMETRY = ["--focus-channel", "Phase3D", "--reference-pixel-size", "0.1494", "--z-extraction-window", "8",
                "--z-focus-offset", "0.3", "--patch-size", "128", "--final-patch-size", "80", "--device", "cpu",
                "--quiet"]


def test_boc_output_inside_a_collections_plate_is_refused(boc, tmp_path, capsys, monkeypatch):
    root, ckpt = boc
    monkeypatch.chdir(tmp_path)  # the collection's relative paths resolve against its own folder
    before = _snapshot(root)
    _refused(capsys, ["predict", "--collection", root / "collection.yml", "--checkpoint", ckpt,
                      "--output", root / "plate.zarr" / "emb.zarr", *BOC_GEOMETRY], "lies inside the input plate 0")
    assert _snapshot(root) == before


def test_boc_output_inside_the_plate_a_cell_index_names_from_the_working_folder(boc, capsys, monkeypatch):
    """store_path 'plate.zarr' of idx/cell_index.parquet: not beside the parquet, so the run reads it from the
    working folder — and the guard protects exactly that plate."""
    root, ckpt = boc
    (root / "idx").mkdir()
    shutil.move(root / "cell_index.parquet", root / "idx" / "cell_index.parquet")
    doc = yaml.safe_load((root / "predict.yml").read_text())
    doc["data"]["init_args"]["cell_index_path"] = "idx/cell_index.parquet"
    (root / "predict.yml").write_text(yaml.safe_dump(doc))
    monkeypatch.chdir(root)
    before = _snapshot(root)
    _refused(capsys, ["predict", "-c", "predict.yml", "--checkpoint", ckpt, "--output", "plate.zarr/emb.zarr",
                      "--device", "cpu", "--quiet"], "lies inside the input plate 0 of the cell index")
    assert _snapshot(root) == before


def test_the_guard_and_the_run_resolve_a_cell_index_store_path_with_one_function(boc, tmp_path, monkeypatch):
    from napari_dynaclr.core.cell_index import resolve_index_path
    from napari_dynaclr.core.config import PredictConfig

    root, _ = boc
    (root / "idx").mkdir()
    shutil.copy(root / "cell_index.parquet", root / "idx" / "cell_index.parquet")
    monkeypatch.chdir(root)
    cfg = PredictConfig.boc(cell_index_path=Path("idx/cell_index.parquet"))
    assert resolve_index_path("plate.zarr", cfg.source.cell_index_path) == Path.cwd() / "plate.zarr"
    assert cfg.input_paths()["plate 0 of the cell index"] == Path.cwd() / "plate.zarr"
    shutil.copytree(root / "plate.zarr", root / "idx" / "plate.zarr")  # beside the parquet wins, for both
    assert resolve_index_path("plate.zarr", cfg.source.cell_index_path) == Path("idx/plate.zarr")
    assert cfg.input_paths()["plate 0 of the cell index"] == Path("idx/plate.zarr")


def test_cell_index_output_inside_a_plate_that_is_no_input_is_refused(boc, tmp_path, capsys):
    root, _ = boc
    other = tmp_path / "other.zarr"
    shutil.copytree(root / "plate.zarr", other)
    before = _snapshot(other)
    _refused(capsys, ["cell-index", "--collection", root / "collection.yml", "-o", other / "A" / "idx.parquet"],
             "lies inside the zarr store")
    assert _snapshot(other) == before


# ------------------------------------------------------------------ the dock's saves and exports


def test_the_docks_csv_export_and_store_save_never_write_into_the_sessions_inputs(project, tmp_path):
    from napari_dynaclr._napari import cellmodel
    from napari_dynaclr._napari.workers import save_to_store
    from napari_dynaclr.errors import OutputError

    adata = _adata(2.0)
    table = adata.obs.reset_index(drop=True).copy()
    table["annotation"] = pd.Categorical(["a", "b", "a", "b"])
    inputs = {"plate": project / "plate.zarr", "tracks": project / "tracks", "store": tmp_path / "s.zarr"}
    before = _snapshot(project)
    with pytest.raises(OutputError, match="is the input tracks"):
        cellmodel.write_annotations_csv(table, project / "tracks", inputs=inputs)
    with pytest.raises(OutputError, match="lies inside the input tracks"):
        cellmodel.write_annotations_csv(table, project / "tracks" / "A" / "1" / "0" / "tracks.csv", inputs=inputs)
    with pytest.raises(OutputError, match="lies inside the input plate"):
        save_to_store(adata, table, project / "plate.zarr" / "emb.zarr", inputs=inputs)
    with pytest.raises(OutputError, match="not a text file"):
        cellmodel.write_annotations_csv(table, project / "model.ckpt", inputs=inputs)
    assert _snapshot(project) == before
    assert cellmodel.write_annotations_csv(table, tmp_path / "ann.csv", inputs=inputs) == 4
    assert cellmodel.write_annotations_csv(table, tmp_path / "ann.csv", inputs=inputs) == 4  # (re-export)


def test_sigterm_is_held_during_a_report_swap_too(stores, tmp_path, monkeypatch):
    from napari_dynaclr.cli import _on_sigterm
    from napari_dynaclr.core import output
    from napari_dynaclr.errors import InterruptedAfterCommit

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    real = output.OutputGuard._swap_in

    def swap_with_signal(self, tmp):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(self, tmp)

    monkeypatch.setattr(output.OutputGuard, "_swap_in", swap_with_signal)
    try:
        with pytest.raises(InterruptedAfterCommit, match="new file was complete"):
            output.write_json(tmp_path / "r.json", {"a": 1}, "test")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert '"a": 1' in (tmp_path / "r.json").read_text()
