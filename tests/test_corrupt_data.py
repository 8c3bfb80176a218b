"""Corrupt plates: a deleted, truncated, garbage, empty or unreadable chunk, broken metadata, a FOV whose array
does not match the plate's channels. Each: exit 2, one line ``napari-dynaclr: error: ...`` naming the FOV or
the file, nothing at the output path. Both layouts: dev2d is zarr v2 (NGFF 0.4), dev3d2ch zarr v3 (NGFF 0.5).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from napari_dynaclr.cli import main

# plate channels: dev2d (Phase3D, GFP), predicted Phase3D; dev3d2ch (RFP, Phase3D), predicted Phase3D + RFP
CHANNEL = {"dev2d": {0: "Phase3D"}, "dev3d2ch": {0: "RFP", 1: "Phase3D"}}


def chunk(root, case: str, fov: str, t: int, c: int):
    """The chunk file of (t, c) of a FOV (one chunk per (t, c) plane in both cases)."""
    base = root / "plate.zarr" / fov / "0"
    return base / f"{t}/{c}/0/0/0" if case == "dev2d" else base / f"c/{t}/{c}/0/0/0"


def _args(case, root, ckpt, out):
    if case == "dev2d":
        return ["predict", "--plate", root / "plate.zarr", "--tracks", root / "tracks", "--channels", "Phase3D",
                "--z-range", 1, 2, "--patch-size", 128, "--checkpoint", ckpt, "--output", out, "--device", "cpu",
                "--quiet"]
    return ["predict", "-c", root / "predict.yml", "--ckpt-path", ckpt, "--output", out, "--device", "cpu", "--quiet"]


def _refused(case, root, ckpt, tmp_path, capsys, *needles):
    work = tmp_path / "work"
    work.mkdir()
    out = work / "out.zarr"
    code = main([str(a) for a in _args(case, root, ckpt, out)])
    stdout, err = capsys.readouterr()
    assert code == 2, (stdout, err)
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("napari-dynaclr: warning")]
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-dynaclr: error: "), lines[0]
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists() and not list(work.iterdir())
    return lines[0]


def _truncate(f):
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])


def _garbage(f):
    f.write_bytes(np.random.default_rng(0).integers(0, 256, f.stat().st_size, dtype=np.uint8).tobytes())


def _header_only(f):
    f.write_bytes(f.read_bytes()[:16])


CASES = ("dev2d", "dev3d2ch")


@pytest.mark.parametrize("case", CASES)
def test_deleted_chunk(case, case_copy, conformance_ckpt, tmp_path, capsys):
    root = case_copy(case)
    chunk(root, case, "A/1/0", 0, 0).unlink()
    _refused(case, root, conformance_ckpt(case), tmp_path, capsys,
             "FOV A/1/0: 1 of ", " image chunks are missing (they would be read as 0)", "--allow-nonfinite")


@pytest.mark.parametrize("case", CASES)
def test_deleted_chunks_in_two_fovs(case, case_copy, conformance_ckpt, tmp_path, capsys):
    root = case_copy(case)
    other = "B/2/0" if case == "dev2d" else "B/3/0"
    chunk(root, case, "A/1/0", 1, 0).unlink()
    chunk(root, case, other, 2, 0).unlink()
    chunk(root, case, other, 3, 0).unlink()
    _refused(case, root, conformance_ckpt(case), tmp_path, capsys,
             "FOV A/1/0: 1 of ", f"(and 2 in 1 more FOV(s): {other})")


@pytest.mark.parametrize("damage", [_truncate, _garbage, _header_only, lambda f: f.write_bytes(b"")],
                         ids=["truncated", "garbage", "header-only", "empty-file"])
@pytest.mark.parametrize("case", CASES)
def test_corrupt_chunk(case, damage, case_copy, conformance_ckpt, tmp_path, capsys):
    root = case_copy(case)
    damage(chunk(root, case, "A/1/0", 0, 0))
    line = _refused(case, root, conformance_ckpt(case), tmp_path, capsys,
                    f"cannot read FOV A/1/0 (t=0, channel {CHANNEL[case][0]}): ")
    assert len(line.split("): ", 1)[1]) > 0


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads a chmod 000 file")
@pytest.mark.parametrize("case", CASES)
def test_unreadable_chunk(case, case_copy, conformance_ckpt, tmp_path, capsys):
    root = case_copy(case)
    f = chunk(root, case, "A/1/0", 0, 0)
    f.chmod(0)
    try:
        _refused(case, root, conformance_ckpt(case), tmp_path, capsys, "cannot read FOV A/1/0 (t=0, channel ")
    finally:
        f.chmod(0o644)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads a chmod 000 file")
def test_unreadable_fov_metadata(case_copy, conformance_ckpt, tmp_path, capsys):
    root = case_copy("dev3d2ch")
    f = root / "plate.zarr" / "B/3/0/zarr.json"
    f.chmod(0)
    try:
        _refused("dev3d2ch", root, conformance_ckpt("dev3d2ch"), tmp_path, capsys, str(f))
    finally:
        f.chmod(0o644)


# metadata file (relative to plate.zarr) -> broken content
BROKEN_JSON = {
    "dev2d": ["A/1/1/.zattrs", "A/1/0/0/.zarray", "B/2/.zattrs", ".zattrs"],
    "dev3d2ch": ["B/3/0/zarr.json", "A/1/0/0/zarr.json", "A/1/zarr.json", "zarr.json"],
}


@pytest.mark.parametrize("content", ['{"multiscales": [', "", "\x00\xff\xfe binary", "[1, 2, 3]"],
                         ids=["unclosed", "empty", "binary", "not-an-object"])
@pytest.mark.parametrize("case, rel", [(c, r) for c in CASES for r in BROKEN_JSON[c]],
                         ids=[f"{c}:{r}" for c in CASES for r in BROKEN_JSON[c]])
def test_broken_metadata_json(case, rel, content, case_copy, conformance_ckpt, tmp_path, capsys):
    root = case_copy(case)
    f = root / "plate.zarr" / rel
    assert f.is_file()
    f.write_bytes(content.encode("latin-1"))
    line = _refused(case, root, conformance_ckpt(case), tmp_path, capsys, str(f))
    assert "is not valid JSON" in line or "does not hold a JSON object" in line


def _set_channels(root, case, fov, c):
    """Rewrite a FOV's array metadata to hold *c* channels (the chunks of the others are removed)."""
    base = root / "plate.zarr" / fov / "0"
    meta = base / (".zarray" if case == "dev2d" else "zarr.json")
    doc = json.loads(meta.read_text())
    n_t = doc["shape"][0]
    old_c = doc["shape"][1]
    doc["shape"][1] = c
    meta.write_text(json.dumps(doc))
    for t in range(n_t):
        for k in range(c, old_c):
            d = base / (f"{t}/{k}" if case == "dev2d" else f"c/{t}/{k}")
            shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("case, fov", [("dev2d", "A/1/1"), ("dev3d2ch", "B/3/0"), ("dev3d2ch", "A/1/0")])
def test_fov_with_fewer_channels_than_the_plate(case, fov, case_copy, conformance_ckpt, tmp_path, capsys):
    root = case_copy(case)
    _set_channels(root, case, fov, 1)
    names = "Phase3D, GFP" if case == "dev2d" else "RFP, Phase3D"
    _refused(case, root, conformance_ckpt(case), tmp_path, capsys,
             f"FOV {fov}: image array '0' has C=1 but plate", f"lists 2 channel(s) ({names})")


def test_fov_listing_other_channels_than_the_plate(case_copy, conformance_ckpt, tmp_path, capsys):
    """Same C, but the FOV's own metadata names the channels in another order: the planes would be swapped."""
    root = case_copy("dev3d2ch")
    meta = root / "plate.zarr" / "B/3/0/zarr.json"
    doc = json.loads(meta.read_text())
    channels = doc["attributes"]["ome"]["omero"]["channels"]
    channels.reverse()
    meta.write_text(json.dumps(doc))
    _refused("dev3d2ch", root, conformance_ckpt("dev3d2ch"), tmp_path, capsys,
             "FOV B/3/0 lists channels Phase3D, RFP but plate", "lists RFP, Phase3D")


def test_fov_array_not_5d(case_copy, conformance_ckpt, tmp_path, capsys):
    root = case_copy("dev2d")
    meta = root / "plate.zarr" / "A/1/1/0/.zarray"
    doc = json.loads(meta.read_text())
    doc["shape"], doc["chunks"] = doc["shape"][1:], doc["chunks"][1:]
    meta.write_text(json.dumps(doc))
    _refused("dev2d", root, conformance_ckpt("dev2d"), tmp_path, capsys, "FOV A/1/1: image array '0' has shape",
             "expected 5-D TCZYX")


# ---------------------------------------------------------------------------------------- the API level


def _plain_cfg(root, **kw):
    from napari_dynaclr.core.config import PredictConfig

    return PredictConfig.plain(root / "plate.zarr", root / "tracks", ["Phase3D"], (1, 2), [128], **kw)


def test_missing_chunk_allowed_is_one_warning_and_reads_zeros(case_copy):
    from napari_dynaclr.predict.plan import plan_prediction

    root = case_copy("dev2d")
    chunk(root, "dev2d", "A/1/0", 0, 0).unlink()
    with pytest.warns(UserWarning, match=r"FOV A/1/0: 1 of \d+ image chunks are missing.*reading them as 0"):
        plan = plan_prediction(_plain_cfg(root, allow_nonfinite=True))
    try:
        assert list(plan.missing_chunks) == ["A/1/0"]
        raw = plan.read_batch(0)
        first = plan.cells.iloc[0]
        assert first["fov_name"] == "A/1/0" and first["t"] == 0 and not raw[0].any()
    finally:
        plan.close()


def test_damage_outside_what_is_read_is_not_refused(case_copy):
    """An unused channel's chunks and an excluded FOV are never read: no refusal for them."""
    from napari_dynaclr.predict.batches import load_batch
    from napari_dynaclr.predict.plan import plan_prediction

    root = case_copy("dev2d")
    chunk(root, "dev2d", "A/1/0", 0, 1).unlink()  # GFP, not predicted
    _garbage(chunk(root, "dev2d", "A/1/0", 1, 1))
    chunk(root, "dev2d", "B/2/0", 0, 0).unlink()  # excluded below
    plan = plan_prediction(_plain_cfg(root, exclude_fovs=["B/2/0"]))
    try:
        for i in range(plan.n_batches):
            assert np.isfinite(load_batch(plan, i).numpy()).all()
    finally:
        plan.close()


def test_read_error_names_fov_t_and_channel_for_every_reader_path(case_copy):
    """Whole planes, bounding boxes and single patches (small caches) all turn a decode failure into one line."""
    from napari_dynaclr.core.patches import PatchReader
    from napari_dynaclr.core.plate import Plate
    from napari_dynaclr.core.predict_yml import load_predict_yaml
    from napari_dynaclr.errors import PlateError

    root = case_copy("dev3d2ch")
    _garbage(chunk(root, "dev3d2ch", "A/1/0", 0, 0))  # RFP at t=0
    cfg = load_predict_yaml(root / "predict.yml").source
    with Plate(cfg.data_path) as plate:
        cells = __import__("pandas").DataFrame({"fov_index": [0, 0], "t": [0, 0], "y": [104, 159], "x": [147, 203]})
        idx = plate.channel_indices(cfg.source_channel)
        for cache in (512 * 2**20, 2**20, 1):
            reader = PatchReader(plate.fovs, idx, cfg.z_range, (96, 96), channel_names=cfg.source_channel,
                                 cache_bytes=cache)
            with pytest.raises(PlateError, match=r"^cannot read FOV A/1/0 \(t=0, channel RFP\): \S"):
                reader.read(cells)
