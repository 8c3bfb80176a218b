"""The bad-input matrix: every case gives one line naming the problem, exit 2, nothing at the output path."""

from __future__ import annotations

import errno
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from napari_dynaclr.cli import main
from napari_dynaclr.model.checkpoint import read_state_dict


def _ckpt(tmp, sd, name="bad.ckpt"):
    path = tmp / name
    torch.save({"state_dict": sd, "pytorch-lightning_version": "2.6.6", "epoch": 0, "global_step": 0}, path)
    return path


def _edit_csv(root, fov, fn):
    csv = root / "tracks" / fov / "tracks.csv"
    fn(pd.read_csv(csv)).to_csv(csv, index=False)
    return csv


def _edit_attrs(root, fov, fn):
    f = root / "plate.zarr" / fov / ".zattrs"
    attrs = json.loads(f.read_text())
    fn(attrs)
    f.write_text(json.dumps(attrs))


def _edit_yaml(root, fn):
    doc = yaml.safe_load((root / "predict.yml").read_text())
    fn(doc)
    (root / "predict.yml").write_text(yaml.safe_dump(doc))


def _set(args, flag, *values):
    if flag not in args:
        return args + [flag, *values]
    i = args.index(flag)
    n = 1
    while i + n < len(args) and not str(args[i + n]).startswith("--"):
        n += 1
    return args[:i] + [flag, *values] + args[i + n:]


def _drop_key(sd, key):
    del sd[key]
    return sd


def _single_fov_store(root):
    from iohub.ngff import open_ome_zarr

    with open_ome_zarr(root / "fov.zarr", layout="fov", mode="w-", channel_names=["Phase3D"]) as pos:
        pos.create_image("0", np.zeros((1, 1, 1, 8, 8), np.float32))
    return root / "fov.zarr"


def _uint16_plate(root):
    """dev2d's plate rewritten as uint16 (VisCy crashes on uint16 + percentile scaling; we must not)."""
    from iohub.ngff import open_ome_zarr

    with open_ome_zarr(root / "plate.zarr", mode="r") as src, \
            open_ome_zarr(root / "u16.zarr", layout="hcs", mode="w-", channel_names=src.channel_names,
                          version="0.4") as dst:
        for name, pos in src.positions():
            row, col, fov = name.split("/")
            new = dst.create_position(row, col, fov)
            # scaled into uint16's range (clipping alone zeroes whole planes, which zarr then does not store:
            # a chunk missing from a plate is refused, tests/test_corrupt_data.py)
            data = np.asarray(pos["0"][:], dtype=np.float64)
            new.create_image("0", np.clip(1000 * data + 2000, 0, 65535).astype(np.uint16))
            new.zattrs["normalization"] = pos.zattrs["normalization"]
    return root / "u16.zarr"


# (id, setup(root, tmp, args, sd) -> args, expected substrings of the single error line)
CASES = [
    ("ckpt-empty", lambda r, t, a, sd: _set(a, "--checkpoint", _empty(t)), ["empty.ckpt", "is empty"]),
    ("ckpt-truncated", lambda r, t, a, sd: _set(a, "--checkpoint", _trunc(t, sd)), ["trunc.ckpt"]),
    ("ckpt-not-zip", lambda r, t, a, sd: _set(a, "--checkpoint", _text(t)), ["text.ckpt", "not a PyTorch checkpoint"]),
    ("ckpt-missing", lambda r, t, a, sd: _set(a, "--checkpoint", t / "nope.ckpt"), ["checkpoint not found", "nope.ckpt"]),
    ("ckpt-other-architecture", lambda r, t, a, sd: _set(a, "--checkpoint", _ckpt(t, {"model.fc.weight": torch.zeros(2, 2)})),
     ["not a DynaCLR ContrastiveEncoder checkpoint"]),
    ("ckpt-renamed-key", lambda r, t, a, sd: _set(a, "--checkpoint", _ckpt(t, {**{k: v for k, v in sd.items() if k != "model.projection.0.bias"}, "model.projection.0.bias_renamed": sd["model.projection.0.bias"]})),
     ["model.projection.0.bias", "model.projection.0.bias_renamed"]),
    ("ckpt-missing-key", lambda r, t, a, sd: _set(a, "--checkpoint", _ckpt(t, _drop_key(dict(sd), "model.encoder.head.norm.weight"))),
     ["1 missing key(s): model.encoder.head.norm.weight"]),
    ("ckpt-extra-key", lambda r, t, a, sd: _set(a, "--checkpoint", _ckpt(t, {**sd, "model.extra.weight": torch.zeros(1)})),
     ["1 unexpected key(s): model.extra.weight"]),
    ("ckpt-wrong-shape", lambda r, t, a, sd: _set(a, "--checkpoint", _ckpt(t, {**sd, "model.projection.4.bias": torch.zeros(7)})),
     ["model.projection.4.bias (7,) vs (32,)"]),
    ("config-contradicts-weights", None, ["the weights look like convnext_tiny (in_channels=1", "not convnext_tiny (in_channels=2"]),
    ("plate-not-ome-zarr", lambda r, t, a, sd: _set(a, "--plate", _mkdir(t / "notzarr")), ["notzarr", "not an OME-Zarr store"]),
    ("plate-single-fov", lambda r, t, a, sd: _set(a, "--plate", _single_fov_store(t)), ["fov.zarr is a single FOV", "not an HCS plate"]),
    ("missing-well", lambda r, t, a, sd: a + ["--include-wells", "C/7"], ["well(s) C/7 not in plate", "A/1, B/2"]),
    ("missing-fov", lambda r, t, a, sd: a + ["--exclude-fovs", "A/1/9"], ["A/1/9", "not in plate"]),
    ("missing-channel", lambda r, t, a, sd: _set(a, "--channels", "DAPI"), ["'DAPI'", "available channels: Phase3D, GFP"]),
    ("z-range-outside", lambda r, t, a, sd: _set(a, "--z-range", 2, 5), ["z_range [2, 5] exceeds FOV A/1/0 with Z=3"]),
    ("patch-larger-than-image", lambda r, t, a, sd: _set(a, "--patch-size", 300), ["patch 300x300 does not fit FOV A/1/0", "256x256"]),
    ("patch-not-stride-multiple", lambda r, t, a, sd: _set(a, "--patch-size", 126), ["patch 126x126 is not a multiple of the stem stride 4x4"]),
    ("fov-without-tracks", lambda r, t, a, sd: (shutil.rmtree(r / "tracks" / "B" / "2" / "0"), a)[1], ["no tracks folder for FOV B/2/0"]),
    ("empty-csv", lambda r, t, a, sd: ((r / "tracks/A/1/1/tracks.csv").write_text(""), a)[1], ["A/1/1/tracks.csv is empty"]),
    ("missing-column", lambda r, t, a, sd: (_edit_csv(r, "A/1/0", lambda d: d.drop(columns=["parent_track_id"])), a)[1],
     ["lacks required column(s) parent_track_id"]),
    ("non-numeric", lambda r, t, a, sd: (_edit_csv(r, "A/1/0", lambda d: d.assign(t=d["t"].astype(str).replace("2", "two"))), a)[1],
     ["column 't' has non-numeric value 'two'"]),
    ("nan-in-x", lambda r, t, a, sd: (_edit_csv(r, "B/2/0", lambda d: d.assign(x=d["x"].where(d.index != 4))), a)[1],
     ["B/2/0/tracks.csv: column 'x' has a missing/NaN value (data row 5)"]),
    ("duplicated-track-t", lambda r, t, a, sd: (_edit_csv(r, "A/1/1", lambda d: pd.concat([d, d.iloc[[0]]])), a)[1],
     ["share a (track_id, t) pair, e.g. track_id=1, t=0"]),
    ("all-cells-filtered", lambda r, t, a, sd: _set(a, "--patch-size", 252), ["no cells to predict", "nothing is written"]),
    ("missing-norm-stats", lambda r, t, a, sd: (_edit_attrs(r, "A/1/1", lambda z: z["normalization"]["Phase3D"].pop("fov_statistics")), a)[1],
     ["FOV A/1/1: channel 'Phase3D' has no fov_statistics"]),
    ("missing-norm-level", lambda r, t, a, sd: _set(a, "--norm-level", "timepoint_statistics"), ["has no timepoint_statistics"]),
    ("output-exists", lambda r, t, a, sd: (_mkdir(t / "out.zarr"), a)[1], ["out.zarr already exists", "--overwrite"]),
    ("output-folder-missing", lambda r, t, a, sd: _set(a, "--output", t / "no" / "such" / "out.zarr"), ["output folder", "does not exist"]),
    ("yaml-unknown-class-path", None, ["unsupported data.class_path 'my.DataModule'"]),
    ("yaml-missing-keys", None, ["data.init_args lacks z_range"]),
    ("yaml-unknown-normalization", None, ["unsupported normalization class_path 'monai.transforms.NormalizeIntensityd'"]),
    ("yaml-not-yaml", None, ["is not valid YAML"]),
    ("batch-size-zero", lambda r, t, a, sd: _set(a, "--batch-size", 0), ["--batch-size must be a positive integer, got 0"]),
]

YAML_EDITS = {
    "config-contradicts-weights": lambda d: d["model"]["init_args"]["encoder"]["init_args"].update(in_channels=2),
    "yaml-unknown-class-path": lambda d: d["data"].update(class_path="my.DataModule"),
    "yaml-missing-keys": lambda d: d["data"]["init_args"].pop("z_range"),
    "yaml-unknown-normalization": lambda d: d["data"]["init_args"]["normalizations"].append(
        {"class_path": "monai.transforms.NormalizeIntensityd", "init_args": {"keys": ["Phase3D"]}}),
}


def _empty(t):
    (t / "empty.ckpt").write_bytes(b"")
    return t / "empty.ckpt"


def _trunc(t, sd):
    full = _ckpt(t, sd, "full.ckpt").read_bytes()
    (t / "trunc.ckpt").write_bytes(full[: len(full) // 3])
    return t / "trunc.ckpt"


def _text(t):
    (t / "text.ckpt").write_text("hello")
    return t / "text.ckpt"


def _mkdir(p):
    p.mkdir(parents=True, exist_ok=True)
    return p


@pytest.fixture(scope="module")
def dev2d_sd(conformance_ckpt):
    return read_state_dict(conformance_ckpt("dev2d"))


@pytest.mark.parametrize("case_id, setup, needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case_id, setup, needles, case_copy, conformance_ckpt, dev2d_sd, tmp_path, capsys):
    root = case_copy("dev2d")
    work = _mkdir(tmp_path / "work")
    out = work / "out.zarr"
    existing = out.exists()
    if setup is not None:
        args = ["predict", "--plate", root / "plate.zarr", "--tracks", root / "tracks", "--channels", "Phase3D",
                "--z-range", 1, 2, "--patch-size", 128, "--checkpoint", conformance_ckpt("dev2d"),
                "--output", out, "--device", "cpu", "--quiet"]
        args = setup(root, work, args, dev2d_sd)
        existing = out.exists()
    else:
        if case_id == "yaml-not-yaml":
            (root / "predict.yml").write_text("model: [unclosed\n  data: {")
        else:
            _edit_yaml(root, YAML_EDITS[case_id])
        args = ["predict", "-c", root / "predict.yml", "--ckpt-path", conformance_ckpt("dev2d"), "--output", out,
                "--device", "cpu", "--quiet"]
    code = main([str(a) for a in args])
    stdout, err = capsys.readouterr()
    assert code == 2, (stdout, err)
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("napari-dynaclr: warning")]
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-dynaclr: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    if not existing:
        assert not out.exists()
    leftovers = [p.name for p in work.iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers


def test_matrix_has_at_least_25_cases():
    assert len(CASES) >= 25


def test_uint16_with_percentile_scaling_works(case_copy, conformance_ckpt, tmp_path):
    """VisCy crashes here (torch.quantile on uint16); we promote to float32 and predict."""
    from napari_dynaclr.core.normalize import ScaleIntensityRangePercentiles
    from napari_dynaclr.core.predict_yml import load_predict_yaml
    from napari_dynaclr.predict.run import run_prediction

    root = case_copy("dev2d")
    cfg = load_predict_yaml(root / "predict.yml").with_overrides(
        data_path=_uint16_plate(root), ckpt_path=conformance_ckpt("dev2d"),
        normalizations=[ScaleIntensityRangePercentiles(keys=("Phase3D",), lower=50, upper=99)])
    summary, adata = run_prediction(cfg, device="cpu", write=False)
    assert adata.n_obs == 72 and np.isfinite(adata.X).all()


def test_output_folder_not_writable(monkeypatch, tmp_path):
    import os

    from napari_dynaclr.core.store import check_output_path
    from napari_dynaclr.errors import OutputError

    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if str(p) == str(tmp_path) else real(p, m))
    with pytest.raises(OutputError, match=f"output folder {tmp_path} is not writable"):
        check_output_path(tmp_path / "out.zarr")


def test_disk_full_while_writing(monkeypatch, tmp_path):
    """A write that fails midway (ENOSPC) leaves nothing at the output path and no temporary folder."""
    import anndata as ad

    from napari_dynaclr.core.store import build_anndata, write_store
    from napari_dynaclr.errors import OutputError

    obs = pd.DataFrame({"fov_name": ["A/1/0"] * 3, "track_id": [1, 2, 3], "t": 0, "id": [1, 2, 3],
                        "parent_track_id": -1, "parent_id": -1, "y": 5, "x": 5})
    adata = build_anndata(obs, np.zeros((3, 4), np.float32), np.zeros((3, 2), np.float32))
    real_write = ad.AnnData.write_zarr

    def full_disk(self, store, *a, **k):
        real_write(self, store, *a, **k)  # something is on disk already...
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ad.AnnData, "write_zarr", full_disk)
    with pytest.raises(OutputError, match="No space left on device"):
        write_store(adata, tmp_path / "out.zarr")
    assert list(tmp_path.iterdir()) == []
    # an existing store survives a failed overwrite
    monkeypatch.setattr(ad.AnnData, "write_zarr", real_write)
    write_store(adata, tmp_path / "out.zarr")
    monkeypatch.setattr(ad.AnnData, "write_zarr", full_disk)
    with pytest.raises(OutputError):
        write_store(adata, tmp_path / "out.zarr", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["out.zarr"]
    assert ad.read_zarr(tmp_path / "out.zarr").n_obs == 3
