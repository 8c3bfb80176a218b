"""Bag-of-Channels data path pieces: geometry rules against their definitions (torch's nearest-exact resize,
MONAI's centre crop, VisCy's focus window and border clamp), what we do where VisCy fails, several devices."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import DATA
from napari_dynaclr.core.boc import (
    BocNormalization,
    clamp_rows,
    is_label_free,
    nearest_exact_index,
    z_window,
)
from napari_dynaclr.core.cell_index import sampled_statistics
from napari_dynaclr.core.config import PredictConfig
from napari_dynaclr.core.plate import Plate
from napari_dynaclr.core.predict_yml import load_predict_yaml
from napari_dynaclr.core.store import read_store
from napari_dynaclr.predict.planners import plan_for as plan_prediction
from napari_dynaclr.predict.run import run_prediction


@pytest.mark.parametrize("size_in,size_out", [(7, 10), (72, 96), (128, 128), (10, 7), (96, 64), (5, 16), (3, 1)])
def test_nearest_exact_index_is_torchs(size_in, size_out):
    import torch
    import torch.nn.functional as F

    x = torch.arange(size_in, dtype=torch.float32).reshape(1, 1, size_in)
    expected = F.interpolate(x, size=size_out, mode="nearest-exact")[0, 0].long().numpy()
    np.testing.assert_array_equal(nearest_exact_index(size_in, size_out), expected)


@pytest.mark.parametrize("marker,label_free", [
    ("Phase3D", True), ("BF", True), ("DIC", True), ("Retardance", True), ("brightfield_1", True),
    ("G3BP1", False), ("SEC61B", False), ("raw GFP EX488 EM525-45", False), ("viral_sensor", False),
])
def test_label_free_rule_on_marker(marker, label_free):
    assert is_label_free(marker) is label_free


def test_focus_window_rule():
    assert z_window(12, 8, 5.1667, 0.3) == (3, 11)  # boc2d_mip
    assert z_window(16, 10, 11.2222, 0.3) == (6, 16)  # boc3d: clipped at the top
    assert z_window(16, 10, None, 0.3) == (5, 15)  # no focus statistics: Z // 2
    assert z_window(20, 16, 10.4, 0.3) == (4, 20)  # the spec's worked example
    assert z_window(12, 1, 5.5, 0.5) == (6, 7)  # Python round: 5.5 -> 6 (banker's)


def test_border_rule_float32():
    y = np.array([40.25, 32.0, 31.5, 31.99, -1.0, 176.0, 144.0], dtype=np.float32)
    x = np.full(len(y), 100.0, dtype=np.float32)
    keep, yc, _ = clamp_rows(y, x, 176, 192, (64, 64), 32)
    assert keep.tolist() == [True, True, False, False, False, False, True]
    assert yc[keep].tolist() == [64, 64, 112]


def test_timepoint_statistics_from_pixels_equal_viscy_preprocess():
    with Plate(DATA / "boc3d" / "plate.zarr") as plate:
        for fov in plate.fovs:
            for c, ch in enumerate(plate.channel_names):
                for t in range(fov.shape[0]):
                    stored = fov.normalization[ch]["timepoint_statistics"][str(t)]
                    computed = sampled_statistics(fov.image, t, c)
                    assert {k: computed[k] for k in computed} == {k: stored[k] for k in computed}


def _boc3d(conformance_ckpt, **changes) -> PredictConfig:
    cfg = load_predict_yaml(DATA / "boc3d" / "predict.yml")
    return cfg.with_overrides(ckpt_path=conformance_ckpt("boc3d"), accelerator="cpu", **changes)


def test_fov_statistics_level_reads_the_plate(conformance_ckpt):
    """VisCy fails with KeyError 'fov_statistics' (its BoC dataset only has the parquet's timepoint values)."""
    cfg = _boc3d(conformance_ckpt, normalizations=[BocNormalization(level="fov_statistics")])
    plan = plan_prediction(cfg)
    try:
        row = plan.cells.iloc[-1]
        exp = plan.experiments[int(row["exp_index"])]
        stats = exp.plate.fovs[int(row["fov_index"])].normalization[exp.channel]["fov_statistics"]
        assert row["sub"] == np.float32(stats["mean"])
        assert row["div"] == np.float32(np.float32(stats["std"]) + np.float32(1e-8))
        assert np.isfinite(plan.read_batch(0)).all()
    finally:
        plan.close()


def test_pixels_finer_than_the_reference_stay_inside_the_image(conformance_ckpt, tmp_path):
    """VisCy clamps with the unscaled half patch and then reads past the edge (IndexError OUT_OF_RANGE)."""
    df = pd.read_parquet(DATA / "boc3d" / "cell_index.parquet")
    df["pixel_size_xy_um"] = np.float32(0.1)
    shutil.copytree(DATA / "boc3d" / "plate.zarr", tmp_path / "plate.zarr")
    df.to_parquet(tmp_path / "cell_index.parquet", index=False)
    cfg = _boc3d(conformance_ckpt, cell_index_path=tmp_path / "cell_index.parquet")
    plan = plan_prediction(cfg)
    try:
        half = plan.experiments[0].geometry.read_half
        assert half == (72, 72)  # round(48 * 1.494)
        assert (plan.cells["yc"] >= half[0]).all() and (plan.cells["yc"] <= 160 - half[0]).all()
        for i in range(plan.n_batches):
            assert np.isfinite(plan.read_batch(i)).all()
    finally:
        plan.close()


def test_model_inputs_follow_viscys_order(conformance_ckpt):
    """One boc2d_mip sample rebuilt by hand: read, normalise, reduce (middle slice / max), centre crop."""
    cfg = load_predict_yaml(DATA / "boc2d_mip" / "predict.yml").with_overrides(ckpt_path=conformance_ckpt("boc2d_mip"))
    plan = plan_prediction(cfg)
    try:
        x = plan.read_batch(2)  # rows 32-47 mix Phase3D and G3BP1
        start, _ = plan.batch_bounds(2)
        markers = set()
        for k in range(x.shape[0]):
            row = plan.cells.iloc[start + k]
            exp = plan.experiments[int(row["exp_index"])]
            img = exp.plate.fovs[int(row["fov_index"])].image
            c = exp.plate.channel_names.index(exp.channel)
            y0, x0 = int(row["yc"]) - 64 + 24, int(row["xc"]) - 64 + 24
            raw = np.asarray(img[int(row["t"]), c, 3:11, y0:y0 + 80, x0:x0 + 80])
            norm = (raw - np.float32(row["norm_mean"])) / (np.float32(row["norm_std"]) + np.float32(1e-8))
            expected = norm[4] if row["marker"] == "Phase3D" else norm.max(axis=0)
            np.testing.assert_array_equal(x[k, 0, 0], expected)
            markers.add(row["marker"])
        assert markers == {"Phase3D", "G3BP1"}
    finally:
        plan.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_give_the_single_device_store(conformance_ckpt, tmp_path):
    """VisCy's own BoC predict with several devices overwrites its output with one rank's share; ours is whole."""
    folder = tmp_path / "boc3d"
    folder.mkdir()
    for name in ("plate.zarr",):
        shutil.copytree(DATA / "boc3d" / name, folder / name)
    for name in ("cell_index.parquet", "predict.yml"):
        shutil.copy(DATA / "boc3d" / name, folder / name)
    import torch

    ckpt = conformance_ckpt("boc3d")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank (OMP_NUM_THREADS=1 below); other thread counts differ at float level
    try:
        run_prediction(_boc3d(conformance_ckpt, cell_index_path=folder / "cell_index.parquet",
                              output_path=folder / "one.zarr", cpu_backend="eager"))  # the ranks' kernels
    finally:
        torch.set_num_threads(threads)
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), PYTHONWARNINGS="ignore",
               OMP_NUM_THREADS="1")
    for k in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "GLOBAL_RANK", "SLURM_JOB_ID", "SLURM_NTASKS"):
        env.pop(k, None)
    exe = Path(sys.executable).parent / "napari-dynaclr"
    cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "napari_dynaclr"]
    cmd = cli + ["predict", "-c", "predict.yml", "--ckpt-path", str(ckpt), "-o", "two.zarr", "--device", "cpu",
                 "--devices", "2", "--strategy", "ddp", "--quiet"]
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "cpux2" in proc.stdout
    one, two = read_store(folder / "one.zarr"), read_store(folder / "two.zarr")
    assert one.n_obs == 48
    assert one.obs.equals(two.obs)
    np.testing.assert_array_equal(one.X, two.X)
    np.testing.assert_array_equal(one.obsm["X_projections"], two.obsm["X_projections"])


@pytest.mark.parametrize("case,depth,stem", [("boc2d_mip", 1, (1, 4, 4)), ("boc3d", 8, (4, 4, 4))])
def test_boc_checkpoints_load_strictly_with_the_inferred_config(case, depth, stem, conformance_ckpt):
    """in_channels 1, 2-D and 3-D stems: the config inferred from the weights is the training config."""
    import json

    from napari_dynaclr.core.architecture import EncoderConfig
    from napari_dynaclr.model.checkpoint import infer_config, model_from_state_dict, read_state_dict

    model = json.loads((DATA / case / "case.json").read_text())["model"]
    sd = read_state_dict(conformance_ckpt(case))
    cfg = infer_config(sd)
    assert cfg == EncoderConfig.from_dict(model["encoder_init_args"])
    assert (cfg.in_channels, cfg.in_stack_depth, cfg.stem_kernel_size) == (1, depth, stem)
    loaded = model_from_state_dict(sd)
    assert not loaded.model.training
    assert loaded.n_parameters == model["weights"]["n_parameters"]


def test_plate_without_focus_statistics_centres_the_window_with_a_warning(conformance_ckpt, tmp_path):
    import json

    shutil.copytree(DATA / "boc3d" / "plate.zarr", tmp_path / "plate.zarr")
    shutil.copy(DATA / "boc3d" / "cell_index.parquet", tmp_path / "cell_index.parquet")
    meta_file = tmp_path / "plate.zarr" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    del meta["attributes"]["focus_slice"]
    meta_file.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="no focus_slice"):
        plan = plan_prediction(_boc3d(conformance_ckpt, cell_index_path=tmp_path / "cell_index.parquet"))
    try:
        assert {e.geometry.z_range for e in plan.experiments} == {(5, 15)}  # Z // 2 = 8, 8 - int(10 * 0.3)
    finally:
        plan.close()
