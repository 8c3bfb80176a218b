"""One writer per output: a second run on the same output fails at once naming the first; a crashed run
never blocks later ones; a store that appears meanwhile is never replaced without overwrite; leftovers of
killed runs are cleaned by the next run on that path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_dynaclr.core.output import OutputGuard
from napari_dynaclr.core.store import build_anndata, read_store, write_store
from napari_dynaclr.errors import OutputError


def _adata(value: float = 0.0, n: int = 3):
    obs = pd.DataFrame({"fov_name": ["A/1/0"] * n, "track_id": range(n), "t": 0, "id": range(n),
                        "parent_track_id": -1, "parent_id": -1, "y": 5, "x": 5})
    return build_anndata(obs, np.full((n, 4), value, np.float32), np.full((n, 2), value, np.float32))


def _hold_lock_in_another_process(out: Path, seconds: float = 60.0) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import sys, time
        from napari_dynaclr.core.output import OutputGuard
        with OutputGuard({str(out)!r}):
            print("LOCKED", flush=True)
            time.sleep({seconds})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "LOCKED"
    return proc


def test_a_second_writer_fails_at_once_naming_the_first(tmp_path):
    out = tmp_path / "emb.zarr"
    holder = _hold_lock_in_another_process(out)
    try:
        t0 = time.perf_counter()
        with pytest.raises(OutputError, match=rf"another napari-dynaclr run \(pid {holder.pid} on .*\) is writing"):
            write_store(_adata(), out)
        assert time.perf_counter() - t0 < 5  # at once, not after waiting
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()


def test_the_cli_refuses_a_second_run_on_the_same_output(tmp_path, case_copy, conformance_ckpt, capsys):
    from napari_dynaclr.cli import main

    root = case_copy("dev2d")
    out = tmp_path / "emb.zarr"
    holder = _hold_lock_in_another_process(out)
    try:
        code = main(["predict", "-c", str(root / "predict.yml"), "--ckpt-path", str(conformance_ckpt("dev2d")),
                     "--output", str(out), "--device", "cpu", "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and f"pid {holder.pid}" in err[0], err
    finally:
        holder.kill()
        holder.wait()
    assert not out.exists()


def test_a_killed_writer_never_blocks_the_next_run(tmp_path):
    out = tmp_path / "emb.zarr"
    holder = _hold_lock_in_another_process(out)
    holder.kill()  # kill -9: the lock file stays, the kernel drops the lock
    holder.wait()
    assert any(p.name.endswith(".lock") for p in tmp_path.iterdir())
    write_store(_adata(1.0), out)
    assert read_store(out).X[0, 0] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.zarr"]


def test_a_store_that_appears_meanwhile_is_not_replaced_without_overwrite(tmp_path):
    out = tmp_path / "emb.zarr"
    with OutputGuard(out) as guard:
        write_store(_adata(7.0), out.parent / "elsewhere.zarr")
        os.rename(out.parent / "elsewhere.zarr", out)  # another program wrote it during our prediction
        with pytest.raises(OutputError, match="appeared while this run was predicting"):
            write_store(_adata(1.0), out, guard=guard)
    assert read_store(out).X[0, 0] == 7.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.zarr"]


def test_with_overwrite_a_store_that_appeared_is_replaced(tmp_path):
    out = tmp_path / "emb.zarr"
    with OutputGuard(out, overwrite=True) as guard:
        write_store(_adata(7.0), out.parent / "elsewhere.zarr")
        os.rename(out.parent / "elsewhere.zarr", out)
        write_store(_adata(1.0), out, overwrite=True, guard=guard)
    assert read_store(out).X[0, 0] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.zarr"]


def test_leftovers_of_killed_runs_are_cleaned_and_a_hidden_old_store_is_put_back(tmp_path):
    out = tmp_path / "emb.zarr"
    write_store(_adata(3.0), out)
    guard = OutputGuard(out)
    prefix = guard._prefix
    # a run killed while writing its partial store, another killed between the two renames of a
    # non-atomic replacement (the old store hidden, the output path empty)
    partial = tmp_path / f"{prefix}.partial-deadbeef0000"
    write_store(_adata(9.0), tmp_path / "tmp.zarr")
    os.rename(tmp_path / "tmp.zarr", partial)
    os.rename(out, tmp_path / f"{prefix}.old-deadbeef0001")
    unrelated = tmp_path / ".dynaclr-0000000000000000.partial-other"  # another output's: not ours to touch
    unrelated.mkdir()
    with OutputGuard(out, overwrite=True):
        assert read_store(out).X[0, 0] == 3.0  # put back before anything else
        assert not partial.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["emb.zarr", unrelated.name])
