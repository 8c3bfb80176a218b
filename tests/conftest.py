"""Shared fixtures: conformance cases (checkpoints rebuilt from the weights recipe) and small synthetic plates."""

from __future__ import annotations

import gc
import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from napari_dynaclr.core.synthetic import SyntheticSpec

DATA = Path(__file__).parent / "data"
CASES = ("dev2d", "dev3d2ch")

#: 1 well × 2 FOVs × 4 timepoints, 6 cells each (+ a division): 52 cells, 2 batches of 32 — seconds on CPU
SMALL_SPEC = SyntheticSpec(wells=("A/1",), fovs_per_well=2, timepoints=4, size=(128, 128), cells_per_fov=6)


_modules_when_frozen = [0]


@pytest.fixture(autouse=True)
def _imported_modules_out_of_the_collector():
    """Keep what the test process imported out of Python's cyclic collector (``gc.freeze``), so that its full
    collections cost what they cost in a user's napari process.

    The test process imports torch, timm, lightning and napari together (the suite builds checkpoints and runs
    the engine in-process; napari's own process never imports torch: tests/test_napari_guest.py). That is
    ≈ 760,000 objects the collector walks at every full collection against ≈ 170,000 with napari alone, and
    napari runs ``gc.collect()`` at each layer removal: a viewer's teardown took 1.5–2 s (5–10 s on a busy
    machine) instead of ≈ 0.3 s. Modules and what they hold live until the process ends anyway; after a test
    that imported more modules, a collection and a freeze move the survivors to the permanent generation.
    Objects a test creates stay collectable. This is the test process only: the plugin never touches the
    collector of the process it runs in.
    """
    if len(sys.modules) != _modules_when_frozen[0]:
        gc.collect()
        gc.freeze()
        _modules_when_frozen[0] = len(sys.modules)
    yield


def case_json(case: str) -> dict:
    return json.loads((DATA / case / "case.json").read_text())


@pytest.fixture(scope="session")
def conformance_ckpt(tmp_path_factory):
    """Factory: path of the rebuilt checkpoint of a conformance case (built once per session)."""
    from napari_dynaclr.core.architecture import EncoderConfig
    from napari_dynaclr.model.checkpoint import save_checkpoint
    from napari_dynaclr.model.weights import deterministic_encoder

    built = {}

    def get(case: str) -> Path:
        if case not in built:
            cfg = EncoderConfig.from_dict(case_json(case)["model"]["encoder_init_args"])
            path = tmp_path_factory.mktemp(f"ckpt-{case}") / "model.ckpt"
            save_checkpoint(deterministic_encoder(cfg, salt=case), path)
            built[case] = path
        return built[case]

    return get


# The demo fixtures live here, not in a test module: a session-scoped fixture imported into several modules
# (``from napari_fixtures import demo_store``) is one fixture per module, built again in each of them.
@pytest.fixture(scope="session")
def demo_inputs(tmp_path_factory) -> dict:
    """The demo (plate, tracks, checkpoint, predict.yml without UMAP) on the small spec, built once a session."""
    from napari_dynaclr.demo import make_demo_inputs

    return make_demo_inputs(tmp_path_factory.mktemp("napari-demo"), SMALL_SPEC, umap=False)


@pytest.fixture(scope="session")
def demo_store(demo_inputs, tmp_path_factory) -> Path:
    """An embedding store predicted by the core engine (no Qt) from the demo inputs, with PCA + UMAP, built
    once a session (read only: a test that writes into it takes ``demo_copy``)."""
    from napari_dynaclr.core.predict_yml import load_predict_yaml
    from napari_dynaclr.predict.run import run_prediction

    out = tmp_path_factory.mktemp("napari-store") / "embeddings.zarr"
    cfg = load_predict_yaml(demo_inputs["config"])
    cfg = cfg.with_overrides(output_path=out, umap_kwargs={"n_components": 2, "n_neighbors": 15})
    run_prediction(cfg, device="cpu")
    return out


@pytest.fixture
def demo_copy(demo_store, tmp_path) -> Path:
    """A writable copy of the demo store (for tests that write into it)."""
    dst = tmp_path / "copy.zarr"
    shutil.copytree(demo_store, dst)
    return dst


@pytest.fixture
def case_copy(tmp_path):
    """Factory: a writable copy of a conformance case folder (plate, tracks, predict.yml)."""

    def copy(case: str = "dev2d") -> Path:
        dst = tmp_path / case
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copytree(DATA / case / "plate.zarr", dst / "plate.zarr")
        shutil.copytree(DATA / case / "tracks", dst / "tracks")
        shutil.copy(DATA / case / "predict.yml", dst / "predict.yml")
        for p in dst.rglob("*"):
            p.chmod(p.stat().st_mode | 0o200)
        return dst

    return copy


@pytest.fixture(scope="session")
def reference_arrays():
    import numpy as np

    cache = {}

    def get(case: str):
        if case not in cache:
            with np.load(DATA / case / "reference_arrays.npz") as z:
                cache[case] = {k: z[k] for k in z.files}
        return cache[case]

    return get


def write_tracks(folder: Path, fov: str, rows: list[dict] | pd.DataFrame) -> Path:
    d = folder / fov
    d.mkdir(parents=True, exist_ok=True)
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    df.to_csv(d / "tracks.csv", index=False)
    return d / "tracks.csv"


def snapshot(root: Path) -> dict:
    """Every file under *root* with its content hash (what must not change)."""
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def refused(capsys, argv, *needles, allow_warnings: bool = False) -> str:
    """Run the CLI: exit 2 and one line ``napari-dynaclr: error: …`` holding every needle; return the line."""
    from napari_dynaclr.cli import main

    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    if allow_warnings:
        err = [line for line in err if not line.startswith("napari-dynaclr: warning:")]
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("napari-dynaclr: error:"), err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


@pytest.fixture
def tmpfs(tmp_path):
    """Factory: a real small file system (tmpfs) of the given size, when this process may mount one (root);
    unmounted after the test."""
    import os
    import subprocess

    mounted = []

    def mount(size: str = "128k", name: str = "tiny") -> Path:
        mnt = tmp_path / name
        mnt.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
