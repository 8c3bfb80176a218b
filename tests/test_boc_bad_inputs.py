"""Bag-of-Channels bad inputs: one line naming the problem, exit 2, nothing at the output path."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import DATA
from napari_dynaclr.cli import main


@pytest.fixture
def boc3d(tmp_path):
    root = tmp_path / "boc3d"
    root.mkdir()
    for name in ("plate.zarr", "tracks"):
        shutil.copytree(DATA / "boc3d" / name, root / name)
    for name in ("collection.yml", "cell_index.parquet", "cell_index_raw.parquet", "predict.yml"):
        shutil.copy(DATA / "boc3d" / name, root / name)
    for p in root.rglob("*"):
        p.chmod(p.stat().st_mode | 0o200)
    return root


GEOMETRY = ["--focus-channel", "Phase3D", "--reference-pixel-size", "0.1494", "0.174", "--z-window", "8",
            "--z-extraction-window", "10", "--z-focus-offset", "0.3", "--patch-size", "96", "--final-patch-size", "64",
            "--no-z-reduction", "--device", "cpu", "--quiet"]


def _index(r):
    return ["--cell-index", str(r / "cell_index.parquet")]


def _coll(r):
    return ["--plate", str(r / "plate.zarr"), "--tracks", str(r / "tracks"), "--collection", str(r / "collection.yml")]


def _flags(r):
    return ["--plate", str(r / "plate.zarr"), "--tracks", str(r / "tracks"), "--channels", "Phase3D",
            "--markers", "Phase3D", "--pixel-size", "0.2", "0.25", "--perturbation-wells", "mock=A/1", "DENV=A/2"]


def _with(args, flag, *values):
    i = args.index(flag)
    n = 1
    while i + n < len(args) and not str(args[i + n]).startswith("--"):
        n += 1
    return args[:i] + ([flag, *values] if values else []) + args[i + n:]


def _collection(r, fn):
    doc = yaml.safe_load((r / "collection.yml").read_text())
    fn(doc["experiments"])
    (r / "collection.yml").write_text(yaml.safe_dump(doc))
    return _coll(r)


def _parquet(r, fn, name="cell_index.parquet"):
    df = pd.read_parquet(r / name)
    fn(df).to_parquet(r / name, index=False)
    return ["--cell-index", str(r / name)]


def _yaml(r, fn):
    doc = yaml.safe_load((r / "predict.yml").read_text())
    fn(doc["data"]["init_args"])
    (r / "predict.yml").write_text(yaml.safe_dump(doc))
    return None  # -c run


def _drop_fov_stats(r):
    f = r / "plate.zarr" / "A" / "1" / "000000" / "zarr.json"
    meta = json.loads(f.read_text())
    for ch in meta["attributes"]["normalization"].values():
        ch.pop("fov_statistics")
    f.write_text(json.dumps(meta))


def _set_level(d, level):
    d["normalizations"][0]["init_args"]["level"] = level


# (id, source(root) -> source args, or None for `-c predict.yml`; extra geometry edits; expected substrings)
CASES = [
    ("collection-missing-pixel-size", lambda r: _collection(r, lambda e: e[0].pop("pixel_size_xy_um")), None,
     ["experiment boc3d_Phase3D", "pixel_size_xy_um is missing"]),
    ("collection-pixel-size-zero", lambda r: _collection(r, lambda e: e[1].update(pixel_size_xy_um=0)), None,
     ["experiment boc3d_SEC61B", "pixel_size_xy_um must be a positive number"]),
    ("collection-channel-not-in-plate", lambda r: _collection(r, lambda e: e[1]["channels"][0].update(name="DAPI")),
     None, ["channel 'DAPI'", "not in plate", "available channels: Phase3D, raw mCherry EX561 EM600-37"]),
    ("collection-missing-marker", lambda r: _collection(r, lambda e: e[0]["channels"][0].pop("marker")), None,
     ["channel 'Phase3D' has no 'marker'"]),
    ("collection-no-perturbation-wells", lambda r: _collection(r, lambda e: e[0].pop("perturbation_wells")), None,
     ["experiment boc3d_Phase3D", "perturbation_wells"]),
    ("collection-missing", lambda r: _coll(r)[:-1] + [str(r / "nope.yml")], None, ["collection file not found", "nope.yml"]),
    ("index-channel-not-in-plate",
     lambda r: _parquet(r, lambda d: d.assign(channel_name=d["channel_name"].replace("Phase3D", "BF"))), None,
     ["experiment boc3d_Phase3D", "channel 'BF' not in plate"]),
    ("index-pixel-size-zero", lambda r: _parquet(r, lambda d: d.assign(pixel_size_xy_um=np.float32(0))), None,
     ["pixel_size_xy_um is 0.0", "must be positive"]),
    ("index-pixel-size-missing", lambda r: _parquet(r, lambda d: d.assign(pixel_size_z_um=np.float32(np.nan))), None,
     ["pixel_size_z_um is missing", "reference pixel size is 0.174"]),
    ("index-missing-column", lambda r: _parquet(r, lambda d: d.drop(columns=["marker"])), None,
     ["cell_index.parquet lacks column(s) marker"]),
    ("index-not-parquet", lambda r: ((r / "bad.parquet").write_text("a,b\n1,2\n"), ["--cell-index", str(r / "bad.parquet")])[1],
     None, ["bad.parquet is not a readable parquet file"]),
    ("index-missing", lambda r: ["--cell-index", str(r / "none.parquet")], None, ["cell index not found", "none.parquet"]),
    ("index-fov-not-in-plate", lambda r: _parquet(r, lambda d: d.assign(fov=d["fov"].replace("000001", "000009"))),
     None, ["FOV(s) A/2/000009 of the cell index not in plate"]),
    ("index-t-outside-the-plate", lambda r: _parquet(r, lambda d: d.assign(t=d["t"].where(d.index != 5, 7))), None,
     ["experiment boc3d_Phase3D", "rows at t=7 for FOV A/1/000000, which has 3 timepoint(s)"]),
    ("z-window-larger-than-stack", _index, lambda a: _with(a, "--z-extraction-window", "40"),
     ["z window of 40 slices is larger than the stack", "Z=16"]),
    ("z-window-not-the-models", _index, lambda a: _with(_with(a, "--z-window", "4"), "--z-extraction-window", "4"),
     ["--z-window 4 does not fit the model's stem", "in_stack_depth 8"]),
    ("reference-pixel-size-zero", _index, lambda a: _with(a, "--reference-pixel-size", "0"),
     ["reference_pixel_size_xy_um must be a positive number"]),
    ("final-patch-larger", _index, lambda a: _with(a, "--final-patch-size", "128"),
     ["--final-patch-size [128, 128] must lie within --patch-size [96, 96]"]),
    ("unknown-well", _index, lambda a: a + ["--include-wells", "C/9"], ["include_wells C/9 not in the cell index"]),
    ("z-range-with-boc", _index, lambda a: a + ["--z-range", "0", "8"], ["--z-range is for classic models"]),
    ("two-sources", lambda r: _index(r) + _coll(r), None, ["give one source of cells"]),
    ("flags-without-markers", lambda r: _with(_flags(r), "--markers"), None,
     ["--markers needs one marker per channel of --channels (1), got 0"]),
    ("flags-marker-count", lambda r: _with(_flags(r), "--markers", "Phase3D", "SEC61B"), None,
     ["--markers needs one marker per channel of --channels (1), got 2"]),
    ("flags-channel-not-in-plate", lambda r: _with(_with(_flags(r), "--channels", "GFP"), "--markers", "G3BP1"), None,
     ["channel 'GFP' (marker G3BP1) not in plate"]),
    ("flags-missing-pixel-size", lambda r: _with(_flags(r), "--pixel-size"), None,
     ["pixel_size_xy_um is missing but the model's reference pixel size is 0.1494"]),
    ("flags-no-perturbation-wells", lambda r: _with(_flags(r), "--perturbation-wells"), None,
     ["--perturbation-wells is missing"]),
    ("flags-bad-perturbation-wells", lambda r: _with(_flags(r), "--perturbation-wells", "mock"), None,
     ["--perturbation-wells 'mock': expected LABEL=WELL"]),
    ("yaml-channels-per-sample", lambda r: _yaml(r, lambda d: d.update(channels_per_sample=2)), None,
     ["channels_per_sample: only 1"]),
    ("yaml-unsupported-normalization",
     lambda r: _yaml(r, lambda d: d["normalizations"].append({"class_path": "viscy_transforms.ScaleIntensityRangePercentilesd",
                                                              "init_args": {"keys": ["channel_0"]}})), None,
     ["normalizations[1]", "ScaleIntensityRangePercentilesd", "is not supported in a Bag-of-Channels prediction"]),
    ("yaml-other-keys", lambda r: _yaml(r, lambda d: d["normalizations"][0]["init_args"].update(keys=["Phase3D"])), None,
     ["keys must be [channel_0]"]),
    ("yaml-unknown-key", lambda r: _yaml(r, lambda d: d.update(z_windw=3)), None, ["unknown data.init_args key(s) z_windw"]),
    ("yaml-pixel-size-zero", lambda r: _yaml(r, lambda d: d.update(reference_pixel_size_xy_um=0)), None,
     ["reference_pixel_size_xy_um must be a positive number"]),
    ("yaml-fov-statistics-missing",
     lambda r: (_drop_fov_stats(r), _yaml(r, lambda d: _set_level(d, "fov_statistics")))[1], None,
     ["FOV A/1/000000", "no normalization['Phase3D'].fov_statistics.mean", "viscy preprocess"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, boc3d, conformance_ckpt, tmp_path, capsys):
    _, source, edit, expected = case
    out = tmp_path / "out" / "out.zarr"
    out.parent.mkdir()
    given = source(boc3d)
    ckpt = ["--checkpoint", str(conformance_ckpt("boc3d")), "-o", str(out)]
    if given is None:
        args = ["predict", "-c", str(boc3d / "predict.yml"), *ckpt, "--device", "cpu", "--quiet"]
    else:
        args = ["predict", *given, *ckpt, *GEOMETRY]
    if edit is not None:
        args = edit(args)
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    lines = [line for line in err.splitlines() if not line.startswith("napari-dynaclr: warning")]
    assert len(lines) == 1 and lines[0].startswith("napari-dynaclr: error: "), err
    for text in expected:
        assert text in lines[0], lines[0]
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if not p.name.endswith(".lock")] == []


def test_matrix_size():
    assert len(CASES) >= 25
