"""Several devices through Lightning give the same store as one device (2 CPU processes, gloo)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from napari_dynaclr.core.predict_yml import load_predict_yaml
from napari_dynaclr.core.store import read_store
from napari_dynaclr.predict.lightning import device_count, wants_lightning
from napari_dynaclr.predict.run import run_prediction


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli() -> list[str]:
    exe = Path(sys.executable).parent / "napari-dynaclr"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "napari_dynaclr"]


def test_two_cpu_processes_give_the_single_device_store(case_copy, conformance_ckpt):
    folder = case_copy("dev2d")
    ckpt = conformance_ckpt("dev2d")

    cfg = load_predict_yaml(folder / "predict.yml")
    cfg.ckpt_path = ckpt
    cfg.output_path = folder / "one.zarr"
    cfg.accelerator = "cpu"
    cfg.cpu_backend = "eager"  # Lightning ranks run the eager encoder: compare the same kernels
    assert not wants_lightning(cfg)
    run_prediction(cfg)

    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), PYTHONWARNINGS="ignore")
    for k in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "GLOBAL_RANK", "SLURM_JOB_ID", "SLURM_NTASKS"):
        env.pop(k, None)
    cmd = _cli() + ["predict", "-c", "predict.yml", "--ckpt-path", str(ckpt), "-o", "two.zarr",
                    "--device", "cpu", "--devices", "2", "--strategy", "ddp", "--quiet"]
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "cpux2" in proc.stdout  # really ran on two processes

    one, two = read_store(folder / "one.zarr"), read_store(folder / "two.zarr")
    assert list(one.obs_names) == list(two.obs_names)
    assert one.obs.equals(two.obs)
    np.testing.assert_array_equal(one.X, two.X)
    assert sorted(one.obsm) == sorted(two.obsm)
    for k in one.obsm:
        np.testing.assert_array_equal(one.obsm[k], two.obsm[k])
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".dynaclr-")]  # scratch and lock removed


def test_device_count():
    class C:
        accelerator, devices, num_nodes = "cpu", 1, 1

    c = C()
    assert device_count(c) == 1 and not wants_lightning(c)
    c.devices = 2
    assert device_count(c) == 2 and wants_lightning(c)
    c.devices, c.num_nodes = 1, 2
    assert wants_lightning(c)
    c.devices = [0, 1, 2]
    assert device_count(c) == 3


def test_read_ahead_order_and_cleanup(case_copy):
    """The per-rank read-ahead yields this rank's batches in order and releases the plane cache."""
    from napari_dynaclr.predict.batches import read_ahead
    from napari_dynaclr.predict.plan import plan_prediction

    cfg = load_predict_yaml(case_copy("dev2d") / "predict.yml")
    plan = plan_prediction(cfg)
    try:
        mine = list(range(1, plan.n_batches, 2))
        got = list(read_ahead(plan, mine, threads=2))
        assert [i for i, _ in got] == mine
        assert plan.reader.cached_planes == 0
        for i, x in got:
            assert np.array_equal(x.numpy(), plan.load_batch(i).numpy())
    finally:
        plan.close()
