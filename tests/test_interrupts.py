"""Interrupting real runs (SIGTERM / Ctrl-C, cancel between batches) leaves no partial store behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import DATA
from napari_dynaclr.core.predict_yml import load_predict_yaml
from napari_dynaclr.errors import Cancelled
from napari_dynaclr.model.checkpoint import load_checkpoint
from napari_dynaclr.predict.plan import plan_prediction
from napari_dynaclr.predict.run import run_prediction
from napari_dynaclr.predict.single import predict_batches


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_sigterm_while_predicting_leaves_nothing(tmp_path):
    """SIGTERM once the model is running (seen on the progress bar, through a terminal) and well before
    the end: exit 130, the message, and nothing at or beside the output path."""
    import fcntl
    import pty
    import re
    import struct
    import termios

    from napari_dynaclr.core.synthetic import SyntheticSpec
    from napari_dynaclr.demo import make_demo_inputs

    spec = SyntheticSpec(wells=("A/1",), fovs_per_well=2, timepoints=20, size=(128, 128), cells_per_fov=10)
    inputs = make_demo_inputs(tmp_path / "in", spec, umap=False)
    out = tmp_path / "out.zarr"
    cmd = [sys.executable, "-m", "napari_dynaclr", "predict", "-c", str(inputs["config"]), "--output", str(out),
           "--device", "cpu", "--batch-size", "1"]
    master, slave = pty.openpty()  # a terminal on stderr (120 columns): the progress bar is drawn
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    seen, deadline = "", time.monotonic() + 600  # a safety net for a hung run, not a speed limit
    while True:
        done = [int(a) for a, b in re.findall(r"(\d+)/(\d+) \[", seen) if int(a) < int(b) // 2]
        if any(done):
            break
        assert time.monotonic() < deadline and proc.poll() is None, seen[-2000:]
        seen += os.read(master, 4096).decode(errors="replace")
    proc.send_signal(signal.SIGTERM)
    rest = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        rest += chunk
    proc.wait(timeout=120)
    os.close(master)
    stderr = seen + rest.decode(errors="replace")
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted; nothing written" in stderr and "Traceback" not in stderr
    assert not out.exists() and not _leftovers(tmp_path)


def test_cancel_event_stops_between_batches(conformance_ckpt):
    cfg = load_predict_yaml(DATA / "dev2d" / "predict.yml")
    loaded = load_checkpoint(conformance_ckpt("dev2d"))
    plan = plan_prediction(cfg, loaded.config)
    cancel = threading.Event()
    seen = []
    try:
        with pytest.raises(Cancelled):
            for res in predict_batches(plan, loaded.model, "cpu", cancel=cancel):
                seen.append(res.index)
                cancel.set()
    finally:
        plan.close()
    assert seen == [0]


def test_cancel_during_run_prediction_writes_nothing(conformance_ckpt, tmp_path):
    cfg = load_predict_yaml(DATA / "dev2d" / "predict.yml")
    cfg.ckpt_path = conformance_ckpt("dev2d")
    cfg.output_path = tmp_path / "out.zarr"
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        run_prediction(cfg, device="cpu", cancel=cancel, on_batch=lambda res: res.index == 1 and cancel.set())
    assert list(tmp_path.iterdir()) == []


def test_keyboard_interrupt_inside_write_cleans_up(monkeypatch, tmp_path):
    import anndata as ad
    import numpy as np
    import pandas as pd

    from napari_dynaclr.core.store import build_anndata, write_store

    obs = pd.DataFrame({"fov_name": ["A/1/0"], "track_id": [1], "t": [0], "id": [1], "parent_track_id": [-1],
                        "parent_id": [-1], "y": [5], "x": [5]})
    adata = build_anndata(obs, np.zeros((1, 4), np.float32), np.zeros((1, 2), np.float32))
    real = ad.AnnData.write_zarr

    def interrupted(self, store, *a, **k):
        real(self, store, *a, **k)
        signal.raise_signal(signal.SIGINT)  # its handler runs before this returns: KeyboardInterrupt here

    monkeypatch.setattr(ad.AnnData, "write_zarr", interrupted)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # (a test runner's worker may ignore SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            write_store(adata, tmp_path / "out.zarr")
    finally:
        signal.signal(signal.SIGINT, before)
    assert list(tmp_path.iterdir()) == []
