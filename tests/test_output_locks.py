"""Leftovers and locks: leftovers of earlier runs on an output are cleaned whenever a run on it starts, refused runs
included; an old output that cannot be deleted is named in a warning; a killed run's lock never blocks the output
for good, whoever owns its file — while a live holder's still does."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import napari_dynaclr
from napari_dynaclr.core.output import OutputGuard
from napari_dynaclr.core.store import build_anndata, read_store, write_store
from napari_dynaclr.errors import OutputError

SRC = Path(napari_dynaclr.__file__).resolve().parents[1]
ROOT = os.geteuid() == 0
NOBODY = 65534


def _adata(value: float = 0.0, n: int = 3):
    obs = pd.DataFrame({"fov_name": ["A/1/0"] * n, "track_id": range(n), "t": 0, "id": range(n),
                        "parent_track_id": -1, "parent_id": -1, "y": 5, "x": 5})
    return build_anndata(obs, np.full((n, 4), value, np.float32), np.full((n, 2), value, np.float32))


def _leftovers(out: Path) -> tuple[Path, Path]:
    """A killed run's partial store and a hidden old store of an interrupted replacement, for *out*."""
    prefix = OutputGuard(out)._prefix
    partial, old = out.parent / f"{prefix}.partial-deadbeef0000", out.parent / f"{prefix}.old-deadbeef0001"
    write_store(_adata(9.0), out.parent / "a.zarr")
    write_store(_adata(8.0), out.parent / "b.zarr")
    os.rename(out.parent / "a.zarr", partial)
    os.rename(out.parent / "b.zarr", old)
    return partial, old


def test_a_run_refused_with_already_exists_still_cleans_the_leftovers(tmp_path):
    out = tmp_path / "emb.zarr"
    write_store(_adata(3.0), out)
    partial, old = _leftovers(out)
    with pytest.raises(OutputError, match="already exists"):
        write_store(_adata(1.0), out)
    assert not partial.exists() and not old.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.zarr"] and read_store(out).X[0, 0] == 3.0


def test_a_run_refused_by_the_cli_cleans_too(tmp_path, case_copy, conformance_ckpt, capsys):
    from napari_dynaclr.cli import main

    root = case_copy("dev2d")
    out = tmp_path / "emb.zarr"
    write_store(_adata(3.0), out)
    partial, old = _leftovers(out)
    code = main(["predict", "-c", str(root / "predict.yml"), "--ckpt-path", str(conformance_ckpt("dev2d")),
                 "--output", str(out), "--device", "cpu", "--quiet"])
    assert code == 2 and "already exists" in capsys.readouterr().err
    assert not partial.exists() and not old.exists()


@contextlib.contextmanager
def _undeletable(folder: Path):
    """Make something inside *folder* impossible to delete: an immutable file as root (chattr +i), a read-only
    sub-folder otherwise; undone on exit wherever *folder* has moved (yields a function re-finding it)."""
    target = next(p for p in sorted(folder.rglob("*")) if p.is_file())
    rel = target.relative_to(folder)
    if ROOT:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(target)]).returncode != 0:
            pytest.skip("chattr +i is not available here")
        undo = ["chattr", "-i"]
    else:
        target.parent.chmod(0o500)
    moved: list[Path] = []
    try:
        yield moved
    finally:
        for base in [folder, *moved]:
            p = base / rel
            if p.exists():
                if ROOT:
                    subprocess.run([*undo, str(p)], check=False)
                else:
                    p.parent.chmod(0o700)


def test_an_old_store_that_cannot_be_deleted_is_named_in_a_warning(tmp_path):
    out = tmp_path / "emb.zarr"
    write_store(_adata(1.0), out)
    with _undeletable(out) as moved:
        with pytest.warns(UserWarning, match=r"the old .*emb\.zarr, replaced by the new one, could not be deleted .*"
                                             r"it is left at .*\.old-[0-9a-f]{12} — delete it by hand"):
            write_store(_adata(2.0), out, overwrite=True)
        moved += [p for p in tmp_path.iterdir() if ".old-" in p.name]
        assert len(moved) == 1 and read_store(out).X[0, 0] == 2.0
    write_store(_adata(3.0), out, overwrite=True)  # the next run removes it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.zarr"]


# ------------------------------------------------------------------ locks


@pytest.fixture
def shared_dir():
    """A folder another user can write in (no sticky bit), for the lock files of the runs below."""
    path = Path(tempfile.mkdtemp(prefix="dynaclr-locks-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _guard_in_child(out: Path, hold: bool = False, other_user: bool = False) -> subprocess.Popen:
    """A process entering OutputGuard(out): as another user (uid 65534) when *other_user*; with *hold* it keeps the
    lock until killed. It prints TOOK or REFUSED <message>."""
    drop = f"os.setgid({NOBODY}); os.setuid({NOBODY})" if other_user else ""
    code = textwrap.dedent(f"""
        import os, sys, time, pwd, json, socket, fcntl
        sys.path.insert(0, {str(SRC)!r})
        import napari_dynaclr.core.output as output
        from napari_dynaclr.errors import OutputError
        {drop}
        try:
            with output.OutputGuard({str(out)!r}):
                print("TOOK", flush=True)
                while {hold}:
                    time.sleep(1)
        except OutputError as exc:
            print("REFUSED", exc, flush=True)
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _dead_holders_lock(out: Path) -> Path:
    """The lock file a kill -9'd run left on *out* (its holder info inside)."""
    holder = _guard_in_child(out, hold=True)
    assert holder.stdout.readline().strip() == "TOOK"
    holder.kill()
    holder.wait()
    lock = out.parent / f"{OutputGuard(out)._prefix}.lock"
    assert lock.exists()
    return lock


@pytest.mark.parametrize("mode", [0o644, 0o444, 0o000], ids=["another-users", "read-only", "unreadable"])
def test_a_dead_holders_lock_is_taken_over_whoever_owns_it(shared_dir, mode):
    """As root the lock file (root's) is taken over by a run of another user; otherwise by its owner once the
    file is made read-only or unreadable for it. Either way it cannot be opened for writing."""
    out = shared_dir / "emb.zarr"
    lock = _dead_holders_lock(out)
    if not ROOT and mode == 0o644:
        pytest.skip("another user's lock file needs root to make")
    lock.chmod(mode if not ROOT else (0o600 if mode == 0o000 else 0o644))
    runner = _guard_in_child(out, other_user=ROOT)
    stdout, stderr = runner.communicate(timeout=120)
    assert stdout.strip() == "TOOK", stdout + stderr
    assert not lock.exists()  # released (and replaced by the taker's own)


def test_a_live_holders_lock_still_blocks_even_if_it_cannot_be_read(shared_dir):
    out = shared_dir / "emb.zarr"
    holder = _guard_in_child(out, hold=True)
    try:
        assert holder.stdout.readline().strip() == "TOOK"
        lock = out.parent / f"{OutputGuard(out)._prefix}.lock"
        lock.chmod(0o600 if ROOT else 0o000)
        runner = _guard_in_child(out, other_user=ROOT)
        stdout, stderr = runner.communicate(timeout=120)
        assert stdout.startswith("REFUSED another napari-dynaclr run"), stdout + stderr
        assert f"is writing {out}" in stdout
        lock.chmod(0o644)
        runner = _guard_in_child(out)  # readable again: the holder is named
        stdout, _ = runner.communicate(timeout=120)
        assert f"REFUSED another napari-dynaclr run (pid {holder.pid} on " in stdout
    finally:
        holder.kill()
        holder.wait()
