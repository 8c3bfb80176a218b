"""Every input file goes through one check (napari_dynaclr.core.inputs): a named pipe is refused before it is
opened (it would block forever), an unreadable file or folder says "permission denied", every YAML input has the
same limits; checkpoints of both torch.save formats load. Each refusal: one line, exit 2, nothing written."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import pytest
import torch
import yaml

from cli_lines import cli, one_error
from conftest import DATA
from napari_dynaclr.core.architecture import EncoderConfig
from napari_dynaclr.model.checkpoint import load_checkpoint, read_state_dict, save_checkpoint
from napari_dynaclr.model.weights import deterministic_encoder

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_dynaclr"
BOC = DATA / "boc2d_mip"
STORE = DATA / "dev2d" / "reference.zarr"
CSV = DATA / "eval" / "annotations" / "dev2d_by_fov_id.csv"


@pytest.fixture(scope="module")
def boc_ckpt(tmp_path_factory):
    import json

    enc = json.loads((BOC / "case.json").read_text())["model"]["encoder_init_args"]
    path = tmp_path_factory.mktemp("boc-ckpt") / "boc.ckpt"
    save_checkpoint(deterministic_encoder(EncoderConfig.from_dict(enc), salt="boc"), path)
    return path


@contextlib.contextmanager
def fifo(path: Path):
    """A named pipe at *path* with a writer waiting on it: if the code under test opens it, it reads garbage
    instead of hanging the test, and the test fails (the pipe was opened); when the block ends, the writer is
    released either way."""
    os.mkfifo(path)
    opened = threading.Event()

    def writer():
        fd = os.open(path, os.O_WRONLY)  # waits until someone opens the pipe for reading
        if not released.is_set():
            opened.set()  # (before writing: a reader that got data or EOF sees it set)
        os.write(fd, b"not,a\nvalid,input\n")
        os.close(fd)

    released = threading.Event()
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        yield path
        assert not opened.is_set(), f"{path} was opened: reading a named pipe blocks until someone writes to it"
    finally:
        released.set()
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # lets the writer's open return
        thread.join()
        os.close(fd)


def _dev2d_flags(root, ckpt, out):
    return ["predict", "--plate", root / "plate.zarr", "--tracks", root / "tracks", "--channels", "Phase3D",
            "--z-range", 1, 2, "--patch-size", 128, "--checkpoint", ckpt, "--output", out, "--device", "cpu",
            "--quiet"]


def _collection_flags(collection, ckpt, out):
    return ["predict", "--collection", collection, "--plate", BOC / "plate.zarr", "--tracks", BOC / "tracks",
            "--checkpoint", ckpt, "--output", out, "--device", "cpu", "--quiet"]


# ------------------------------------------------------------------------------------------------ named pipes

def test_every_input_file_that_is_a_named_pipe_is_refused(tmp_path, capsys, case_copy, conformance_ckpt, boc_ckpt):
    out = tmp_path / "out.zarr"
    root = case_copy("dev2d")
    ckpt = conformance_ckpt("dev2d")
    runs = {
        "annotation CSV": lambda p: ["evaluate", "classifier", STORE, "--annotations", p, "--task",
                                     "infection_state", "--json", tmp_path / "c.json"],
        "config file": lambda p: ["predict", "-c", p, "--output", out],
        "collection file": lambda p: _collection_flags(p, boc_ckpt, out),
        "checkpoint": lambda p: _dev2d_flags(root, p, out),
        "cell index": lambda p: ["predict", "--cell-index", p, "--checkpoint", boc_ckpt, "--output", out],
    }
    for i, (what, argv) in enumerate(runs.items()):
        with fifo(tmp_path / f"pipe-{i}") as pipe:
            line = one_error(*cli(capsys, *argv(pipe))[::2])
        assert f"{what} {pipe} is a named pipe (FIFO), not a regular file" in line, line
        assert not out.exists() and not (tmp_path / "c.json").exists()
    with fifo(tmp_path / "info.ckpt") as pipe:
        assert "is a named pipe (FIFO)" in one_error(*cli(capsys, "info", pipe)[::2])
    with fifo(tmp_path / "coll.yml") as pipe:
        line = one_error(*cli(capsys, "cell-index", "--collection", pipe, "--output", tmp_path / "i.parquet")[::2])
        assert "collection file" in line and "named pipe" in line
    for f in (root / "tracks" / "B" / "2" / "0").glob("*.csv"):
        f.unlink()
    with fifo(root / "tracks" / "B" / "2" / "0" / "tracks.csv"):
        line = one_error(*cli(capsys, *_dev2d_flags(root, ckpt, out))[::2])
        assert "tracks CSV" in line and "B/2/0/tracks.csv is a named pipe (FIFO)" in line


def test_a_folder_or_a_pipe_where_a_plate_goes(tmp_path, capsys, case_copy, conformance_ckpt):
    root = case_copy("dev2d")
    out = tmp_path / "out.zarr"
    args = _dev2d_flags(root, conformance_ckpt("dev2d"), out)
    with fifo(tmp_path / "plate.zarr") as pipe:
        args[args.index("--plate") + 1] = pipe
        line = one_error(*cli(capsys, *args)[::2])
    assert f"plate {pipe} is a named pipe (FIFO), expected an OME-Zarr directory" in line


# ------------------------------------------------------------------------------------------- permission denied

def _deny(monkeypatch, *paths):
    """Make *paths* unreadable as a non-root user sees them (the tests run as root, where chmod 000 reads)."""
    denied = {os.path.abspath(p) for p in paths}
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if os.path.abspath(p) in denied
                        else real(p, mode, *a, **k))


@pytest.mark.parametrize("what", ["checkpoint", "info", "config file", "collection file", "annotation CSV",
                                  "tracks CSV", "tracks folder", "plate", "cell index"])
def test_unreadable_inputs_say_permission_denied(what, tmp_path, capsys, monkeypatch, case_copy, conformance_ckpt,
                                                 boc_ckpt):
    root = case_copy("dev2d")
    out = tmp_path / "out.zarr"
    ckpt = conformance_ckpt("dev2d")
    flags = _dev2d_flags(root, ckpt, out)
    csv = next((root / "tracks" / "A" / "1" / "1").glob("*.csv"))
    cases = {
        "checkpoint": (ckpt, flags),
        "info": (ckpt, ["info", ckpt]),
        "config file": (root / "predict.yml", ["predict", "-c", root / "predict.yml", "--output", out]),
        "collection file": (BOC / "collection.yml", _collection_flags(BOC / "collection.yml", boc_ckpt, out)),
        "annotation CSV": (CSV, ["evaluate", "classifier", STORE, "--annotations", CSV, "--task", "infection_state",
                                 "--json", tmp_path / "c.json"]),
        "tracks CSV": (csv, flags),
        "tracks folder": (root / "tracks", flags),
        "plate": (root / "plate.zarr", flags),
        "cell index": (BOC / "cell_index.parquet", ["predict", "--cell-index", BOC / "cell_index.parquet",
                                                    "--checkpoint", boc_ckpt, "--output", out]),
    }
    path, argv = cases[what]
    _deny(monkeypatch, path)
    line = one_error(*cli(capsys, *argv)[::2])
    label = "checkpoint" if what == "info" else what
    assert f"{label} {path}: permission denied" in line, line
    assert not out.exists() and not (tmp_path / "c.json").exists()


def test_a_folder_of_tracks_that_cannot_be_entered(tmp_path, capsys, monkeypatch, case_copy, conformance_ckpt):
    root = case_copy("dev2d")
    out = tmp_path / "out.zarr"
    folder = root / "tracks" / "B" / "2" / "0"
    _deny(monkeypatch, folder)
    line = one_error(*cli(capsys, *_dev2d_flags(root, conformance_ckpt("dev2d"), out))[::2])
    assert f"tracks folder of FOV B/2/0 {folder}: permission denied" in line


def test_a_permission_error_while_reading_is_named(tmp_path, monkeypatch):
    """Past the check (a file that becomes unreadable, an ACL that os.access does not see), the read's own
    PermissionError is named too."""
    import pandas as pd

    from napari_dynaclr.errors import AnnotationError
    from napari_dynaclr.evaluate.annotations import read_annotations

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pd, "read_csv", refuse)
    with pytest.raises(AnnotationError, match=f"annotation CSV {CSV}: permission denied"):
        read_annotations(CSV)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode (the os.access cases cover it)")
def test_a_real_unreadable_checkpoint(tmp_path, capsys, conformance_ckpt):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(conformance_ckpt("dev2d").read_bytes())
    ckpt.chmod(0)
    line = one_error(*cli(capsys, "info", ckpt)[::2])
    assert f"checkpoint {ckpt}: permission denied" in line


# ------------------------------------------------------------------------------------------------------- YAML

def _bomb() -> str:
    items = ["l0: &l0 [" + ", ".join(["lol"] * 10) + "]"]
    items += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 10)]
    return "\n".join(items) + "\n"


YAML_CASES = {
    "alias bomb": (lambda base: base + _bomb(), "the YAML expands to more than 100000 values (aliases?); refusing"),
    "recursive alias": (lambda base: base + "loop: &loop [*loop]\n", "nests deeper than 100 levels"),
    "deep nesting": (lambda base: base + "deep: " + "[" * 150 + "]" * 150 + "\n", "nests deeper than 100 levels"),
    "deeper than the parser": (lambda base: base + "deep: " + "[" * 20000 + "]" * 20000 + "\n",
                               "nests deeper than 100 levels"),
    "not yaml": (lambda base: base + "bad: [unclosed\n  x: {", "is not valid YAML"),
}


@pytest.mark.parametrize("reader", ["config file", "collection file"])
@pytest.mark.parametrize("case", list(YAML_CASES))
def test_every_yaml_input_has_the_same_limits(reader, case, tmp_path, capsys, case_copy, boc_ckpt):
    edit, needle = YAML_CASES[case]
    out = tmp_path / "out.zarr"
    if reader == "config file":
        path = case_copy("dev2d") / "predict.yml"
        path.write_text(edit(path.read_text()))
        argv = ["predict", "-c", path, "--output", out]
    else:
        path = tmp_path / "collection.yml"
        path.write_text(edit((BOC / "collection.yml").read_text()))
        argv = _collection_flags(path, boc_ckpt, out)
    line = one_error(*cli(capsys, *argv)[::2])
    assert line.startswith(f"napari-dynaclr: error: {reader} {path}") and needle in line, line
    assert len(line) < 500 and not out.exists()


@pytest.mark.parametrize("reader", ["config file", "collection file"])
def test_oversized_and_binary_yaml(reader, tmp_path, capsys, boc_ckpt):
    out = tmp_path / "out.zarr"
    path = tmp_path / "in.yml"
    with path.open("wb") as fh:  # sparse: 10 MB + 1 byte without writing them
        fh.truncate(10 * 2**20 + 1)
    argv = ["predict", "-c", path, "--output", out] if reader == "config file" else \
        _collection_flags(path, boc_ckpt, out)
    line = one_error(*cli(capsys, *argv)[::2])
    assert f"{reader} {path} is larger than 10 MB ({10 * 2**20 + 1} bytes)" in line
    path.write_bytes(bytes(range(256)))
    line = one_error(*cli(capsys, *argv)[::2])
    assert f"{reader} {path} is not UTF-8 text" in line


def test_only_the_input_module_parses_yaml():
    """One YAML loader (core.inputs.load_yaml) with one set of limits: no other module parses YAML itself."""
    parsers = ("yaml.safe_load(", "yaml.load(", "yaml.full_load(", "yaml.unsafe_load(", "safe_load_all(")
    users = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if any(c in p.read_text() for c in parsers)}
    assert users == {"core/inputs.py"}


def test_every_module_reading_an_input_file_checks_it():
    """Modules that parse a user's file (CSV, parquet, checkpoint) go through core.inputs' check first."""
    readers = ("pd.read_csv(", "read_table(", "torch.load(", "pd.read_parquet(")
    exempt = {"demo.py",  # reads back the truth CSV it has just written itself
              "core/boc.py"}  # lists a cell index's plates for the output guard; the plan reads it checked
    unchecked = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                 if any(r in p.read_text() for r in readers) and "check_input_file" not in p.read_text()
                 and str(p.relative_to(SRC)) not in exempt]
    assert unchecked == []


# ------------------------------------------------------------------------------------------------ checkpoints

def test_a_legacy_pickle_checkpoint_loads(tmp_path, capsys, conformance_ckpt):
    """torch.save(..., _use_new_zipfile_serialization=False): PyTorch < 1.6's format, still valid."""
    zipped = conformance_ckpt("dev2d")
    legacy = tmp_path / "legacy.ckpt"
    torch.save(torch.load(zipped, map_location="cpu", weights_only=True), legacy,
               _use_new_zipfile_serialization=False)
    assert legacy.read_bytes()[:2] != b"PK"
    a, b = read_state_dict(zipped), read_state_dict(legacy)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_checkpoint(legacy).config == load_checkpoint(zipped).config
    code, stdout, err = cli(capsys, "info", legacy)
    assert code == 0, err
    assert "keys match" in stdout


@pytest.mark.parametrize("content, needle", [
    (b"\x80\x02garbage", "is not a PyTorch checkpoint (a legacy pickle that cannot be read"),
    (b"hello, not a checkpoint", "is not a PyTorch checkpoint (neither a zip archive nor a legacy pickle"),
])
def test_files_that_are_not_checkpoints(tmp_path, capsys, content, needle):
    path = tmp_path / "x.ckpt"
    path.write_bytes(content)
    assert needle in one_error(*cli(capsys, "info", path)[::2])


def test_resnet_keys_without_the_stem_batch_norm(tmp_path, capsys, case_copy):
    cfg = EncoderConfig("resnet18", 1, 1, (1, 4, 4), (1, 4, 4), 512, 32)
    path = tmp_path / "resnet.ckpt"
    save_checkpoint(deterministic_encoder(cfg, salt="r"), path)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd["state_dict"] = {k: v for k, v in sd["state_dict"].items() if not k.startswith("model.encoder.bn1.")}
    torch.save(sd, path)
    needle = "has ResNet keys ('model.encoder.layer1.0.conv1.weight') but no 'model.encoder.bn1.weight'"
    assert needle in one_error(*cli(capsys, "info", path)[::2])
    root = case_copy("dev2d")
    out = tmp_path / "out.zarr"
    assert needle in one_error(*cli(capsys, *_dev2d_flags(root, path, out))[::2])
    assert not out.exists()


def test_the_yaml_documents_are_unchanged(case_copy):
    """The loader returns what yaml.safe_load returns for an ordinary file."""
    from napari_dynaclr.core.inputs import load_yaml

    path = case_copy("dev2d") / "predict.yml"
    assert load_yaml(path, "config file") == yaml.safe_load(path.read_text())
