"""Replacing a store is atomic from the user's point of view: at every instant the output path holds the
complete old store or the complete new one — Ctrl-C/SIGTERM included — and what the exit code and message
say is what is on disk. A real full disk is one clear line with nothing left behind."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_dynaclr.core import output
from napari_dynaclr.core.store import build_anndata, read_store, write_store
from napari_dynaclr.errors import InterruptedAfterCommit


def _adata(value: float, n: int = 3):
    obs = pd.DataFrame({"fov_name": ["A/1/0"] * n, "track_id": range(n), "t": 0, "id": range(n),
                        "parent_track_id": -1, "parent_id": -1, "y": 5, "x": 5})
    return build_anndata(obs, np.full((n, 4), value, np.float32), np.full((n, 2), value, np.float32))


@pytest.fixture
def cli_sigterm():
    """SIGTERM handled as the CLI does (raises KeyboardInterrupt), restored afterwards."""
    from napari_dynaclr.cli import _on_sigterm

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_swap_keeps_the_new_store_and_says_so(tmp_path, monkeypatch, cli_sigterm, sig):
    out = tmp_path / "emb.zarr"
    write_store(_adata(1.0), out)
    real = output.OutputGuard._swap_in

    def swap_with_signal(self, tmp):
        os.kill(os.getpid(), sig)  # arrives in the middle of the replacement
        return real(self, tmp)

    monkeypatch.setattr(output.OutputGuard, "_swap_in", swap_with_signal)
    with pytest.raises(InterruptedAfterCommit, match="holds it and is kept"):
        write_store(_adata(2.0), out, overwrite=True)
    assert read_store(out).X[0, 0] == 2.0  # what the message says
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.zarr"]


def test_a_signal_while_the_old_store_is_removed_keeps_the_new_store(tmp_path, monkeypatch, cli_sigterm):
    out = tmp_path / "emb.zarr"
    write_store(_adata(1.0), out)
    real_rmtree = shutil.rmtree

    def rmtree_with_signal(path, *a, **k):
        if ".old-" in str(path):
            os.kill(os.getpid(), signal.SIGTERM)
        return real_rmtree(path, *a, **k)

    monkeypatch.setattr(shutil, "rmtree", rmtree_with_signal)
    with pytest.raises(InterruptedAfterCommit):
        write_store(_adata(2.0), out, overwrite=True)
    assert read_store(out).X[0, 0] == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.zarr"]


def test_an_interruption_while_writing_keeps_the_old_store(tmp_path, monkeypatch):
    import anndata as ad

    out = tmp_path / "emb.zarr"
    write_store(_adata(1.0), out)
    real = ad.AnnData.write_zarr

    def interrupted(self, store, *a, **k):
        real(self, store, *a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(ad.AnnData, "write_zarr", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_store(_adata(2.0), out, overwrite=True)
    assert read_store(out).X[0, 0] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.zarr"]


def test_without_renameat2_the_replacement_still_never_loses_the_old_store(tmp_path, monkeypatch):
    """Where the system has no atomic exchange, a crash between the two renames leaves the old store hidden;
    the next run on that path puts it back (see test_output_concurrency)."""
    monkeypatch.setattr(output.swap, "_rename2", lambda src, dst, flags: False)
    out = tmp_path / "emb.zarr"
    write_store(_adata(1.0), out)
    write_store(_adata(2.0), out, overwrite=True)
    assert read_store(out).X[0, 0] == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.zarr"]


@pytest.fixture
def tiny_disk(tmpfs):
    """A real 128 KiB file system (tmpfs), when this process may mount one (root)."""
    return tmpfs("128k")


def test_a_real_full_disk_is_one_line_and_leaves_nothing(tiny_disk, case_copy, conformance_ckpt, capsys):
    from napari_dynaclr.cli import main

    root = case_copy("dev2d")
    out = tiny_disk / "emb.zarr"
    code = main(["predict", "-c", str(root / "predict.yml"), "--ckpt-path", str(conformance_ckpt("dev2d")),
                 "--output", str(out), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("napari-dynaclr: error: cannot write") and "No space left on device" in err[0], err
    assert list(Path(tiny_disk).iterdir()) == []


def test_a_recorded_file_is_ours_only_while_unchanged(tmp_path):
    """A file written with ``record=True`` is replaced without ``overwrite`` while its content is what its folder's
    manifest records; edited (even a JSON report that keeps its mark), or a user's file of that name, it needs
    ``overwrite``. A marked report that was never recorded keeps the earlier rule (the mark)."""
    from napari_dynaclr.errors import OutputError

    csv, report = tmp_path / "rows.csv", tmp_path / "report.json"
    output.write_text(csv, "a\n1\n", kind="csv", record=True)
    output.write_json(report, {"a": 1}, "test", record=True)
    assert output.recorded(csv) and output.recorded(report)
    output.write_text(csv, "a\n2\n", kind="csv", record=True)  # a rerun: ours, unchanged
    output.write_json(report, {"a": 2}, "test", record=True)
    csv.write_text("a\n2\n# mine\n")
    report.write_text(report.read_text().replace("2", "3"))  # still starts with written_by: napari-dynaclr
    for path, write in ((csv, lambda **kw: output.write_text(csv, "a\n4\n", kind="csv", record=True, **kw)),
                        (report, lambda **kw: output.write_json(report, {"a": 4}, "test", record=True, **kw))):
        assert output.recorded(path) is False
        before = path.read_text()
        with pytest.raises(OutputError, match="already exists") as refused:
            write()
        assert refused.value.remedy is not None and refused.value.remedy.key == "overwrite"
        assert path.read_text() == before
        write(overwrite=True)
        assert output.recorded(path)
    theirs = tmp_path / "theirs.csv"
    theirs.write_text("x\n")
    assert output.recorded(theirs) is None
    with pytest.raises(OutputError, match="already exists"):
        output.write_text(theirs, "a\n", kind="csv", record=True)
    unrecorded = tmp_path / "plain.json"
    output.write_json(unrecorded, {"a": 1}, "test")
    unrecorded.write_text(unrecorded.read_text().replace("1", "5"))
    output.write_json(unrecorded, {"a": 6}, "test")  # the mark alone, as before: replaced
    assert output.recorded(unrecorded) is None and '"a": 6' in unrecorded.read_text()
