"""Bad input → one clear line naming the problem, a non-zero exit, nothing at the output path."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from napari_dynaclr.cli import main


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def dev2d(case_copy, conformance_ckpt, tmp_path):
    root = case_copy("dev2d")
    out = tmp_path / "out.zarr"
    base = ["predict", "--plate", root / "plate.zarr", "--tracks", root / "tracks", "--channels", "Phase3D",
            "--z-range", 1, 2, "--patch-size", 128, "--checkpoint", conformance_ckpt("dev2d"),
            "--output", out, "--device", "cpu", "--quiet"]
    return root, out, base


def _replace(args, flag, *values):
    i = args.index(flag)
    n = 1
    while i + n < len(args) and not str(args[i + n]).startswith("--"):
        n += 1
    return args[:i] + [flag, *values] + args[i + n:]


def assert_clean_failure(code, err, out_path, *needles):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if not line.startswith("napari-dynaclr: warning")]
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-dynaclr: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out_path.exists()
    assert not [p for p in out_path.parent.iterdir() if p.name.startswith((f".{out_path.name}", ".dynaclr-"))]


def test_plain_flags_run_succeeds(dev2d, capsys, reference_arrays):
    root, out, base = dev2d
    code, stdout, err = run_cli(base + ["--batch-size", 16], capsys)
    assert code == 0, err
    from napari_dynaclr.core.store import read_store

    adata = read_store(out)
    assert np.abs(adata.X - reference_arrays("dev2d")["features"]).max() <= 1e-4


def test_missing_channel_lists_available(dev2d, capsys):
    _, out, base = dev2d
    code, _, err = run_cli(_replace(base, "--channels", "DAPI"), capsys)
    assert_clean_failure(code, err, out, "'DAPI'", "available channels: Phase3D, GFP")


def test_z_range_beyond_z(dev2d, capsys):
    _, out, base = dev2d
    code, _, err = run_cli(_replace(base, "--z-range", 1, 9), capsys)
    assert_clean_failure(code, err, out, "z_range [1, 9]", "Z=3")


def test_missing_tracks_csv(dev2d, capsys):
    root, out, base = dev2d
    shutil.rmtree(root / "tracks" / "A" / "1" / "1")
    code, _, err = run_cli(base, capsys)
    assert_clean_failure(code, err, out, "A/1/1")
    (root / "tracks" / "A" / "1" / "1").mkdir(parents=True)
    code, _, err = run_cli(base, capsys)
    assert_clean_failure(code, err, out, "no tracks CSV for FOV A/1/1")


def test_non_numeric_column(dev2d, capsys):
    root, out, base = dev2d
    csv = root / "tracks" / "B" / "2" / "0" / "tracks.csv"
    df = pd.read_csv(csv)
    df["y"] = df["y"].astype(object)
    df.loc[3, "y"] = "abc"
    df.to_csv(csv, index=False)
    code, _, err = run_cli(base, capsys)
    assert_clean_failure(code, err, out, "column 'y'", "'abc'", str(csv))


def test_patch_larger_than_image(dev2d, capsys):
    _, out, base = dev2d
    code, _, err = run_cli(_replace(base, "--patch-size", 512), capsys)
    assert_clean_failure(code, err, out, "patch 512x512 does not fit", "256x256")


def test_output_exists(dev2d, capsys):
    _, out, base = dev2d
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, _, err = run_cli(base, capsys)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert (out / "keep.txt").read_text() == "precious"


def test_overwrite_replaces_an_old_store_atomically(dev2d, capsys):
    """--overwrite replaces an embedding store (and only that: tests/test_output_hazards.py) in one swap."""
    import numpy as np
    import pandas as pd

    from napari_dynaclr.core.store import build_anndata, read_store, write_store

    _, out, base = dev2d
    obs = pd.DataFrame({"fov_name": ["A/1/0"], "track_id": [1], "t": [0], "id": [1], "parent_track_id": [-1],
                        "parent_id": [-1], "y": [5], "x": [5]})
    write_store(build_anndata(obs, np.zeros((1, 4), np.float32), np.zeros((1, 2), np.float32)), out)
    code, _, err = run_cli(base + ["--overwrite"], capsys)
    assert code == 0, err
    assert read_store(out).n_obs == 72
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no lock, partial or old store


def test_corrupt_checkpoint(dev2d, capsys, tmp_path):
    _, out, base = dev2d
    bad = tmp_path / "corrupt.ckpt"
    bad.write_bytes(b"PK\x03\x04 garbage that is not a real archive")
    code, _, err = run_cli(_replace(base, "--checkpoint", bad), capsys)
    assert_clean_failure(code, err, out, "corrupt.ckpt")


def test_channel_count_contradicts_model(dev2d, capsys):
    _, out, base = dev2d
    code, _, err = run_cli(_replace(base, "--channels", "Phase3D", "GFP"), capsys)
    assert_clean_failure(code, err, out, "model takes 1 channel(s)", "Phase3D', 'GFP'")


def test_missing_flags_and_config(capsys, tmp_path):
    code, _, err = run_cli(["predict", "--plate", tmp_path], capsys)
    assert code == 2 and "missing --tracks" in err
    code, _, err = run_cli(["predict", "-c", tmp_path / "nope.yml"], capsys)
    assert code == 2 and "config file not found" in err


def test_no_traceback_in_subprocess(dev2d):
    _, out, base = dev2d
    args = _replace(base, "--channels", "DAPI")
    proc = subprocess.run([sys.executable, "-m", "napari_dynaclr", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("napari-dynaclr: error: channel(s) 'DAPI'")
    debug = subprocess.run([sys.executable, "-m", "napari_dynaclr", "--debug", *map(str, args)],
                           capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_a_fifo_as_tracks_csv_is_refused_not_waited_on(dev2d, capsys):
    """A named pipe where a CSV should be would block the run forever."""
    import os

    root, out, base = dev2d
    folder = root / "tracks" / "A" / "1" / "0"
    for f in folder.glob("*.csv"):
        f.unlink()
    os.mkfifo(folder / "tracks.csv")
    code, _, err = run_cli(base, capsys)
    assert_clean_failure(code, err, out, "tracks.csv is a named pipe (FIFO), not a regular file")


@pytest.mark.parametrize("device, needle", [("mps", "'mps'"), ("tpu", "unknown device 'tpu'"),
                                            ("cuda:7", "CUDA is not available")])
def test_an_unusable_device_is_refused_before_the_model(dev2d, capsys, device, needle):
    root, out, base = dev2d
    code, _, err = run_cli(_replace(base, "--device", device), capsys)
    assert_clean_failure(code, err, out, needle)
