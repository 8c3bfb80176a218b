"""One run model for every model family: the settings are declared once, the families differ only in their data
source, nothing branches on the config's class, the command line and the dock's form give the same settings the
same validation, and errors keep their type, key and remedy across the work process."""

from __future__ import annotations

import ast
import pickle
import types
from pathlib import Path

import pytest

from conftest import DATA
from napari_dynaclr import errors
from napari_dynaclr.core.config import PredictConfig
from napari_dynaclr.core.predict_yml import load_predict_yaml
from napari_dynaclr.errors import ConfigError, DynaclrError, NonfiniteEmbeddings, Remedy

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_dynaclr"


def test_every_setting_is_declared_once():
    import napari_dynaclr.core.boc as boc

    assert not hasattr(boc, "BocConfig")  # no second settings class for the Bag-of-Channels family
    owners: dict[str, list[str]] = {}
    from napari_dynaclr.core.settings import settings_classes

    for cls in settings_classes():
        for name in cls.__annotations__:
            if name in cls.model_fields:
                owners.setdefault(name, []).append(cls.__name__)
    twice = {k: v for k, v in owners.items() if len(v) > 1}
    # each family's own normalisation type (VisCy's transforms vs a Bag-of-Channels sample's), and the tag
    assert set(twice) <= {"kind", "normalizations"}, twice
    common = set(PredictConfig.model_fields) - {"source", "experiment"}
    assert {"ckpt_path", "encoder", "output_path", "batch_size", "cpu_backend", "include_wells"} <= common
    assert all(owners[name] == ["PredictConfig"] for name in common)


def _functions(name: str) -> list[str]:
    found = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == name:
                found.append(str(path.relative_to(SRC)))
    return found


@pytest.mark.parametrize("method", ["with_overrides", "asks_several_devices", "plain"])
def test_every_method_is_written_once(method):
    assert _functions(method) == ["core/config.py"]


def test_nothing_branches_on_the_config_class():
    """Only the data-source modules may ask what a config or a source is; the rest asks the source."""
    classes = {"PredictConfig", "BocConfig", "TracksSource", "CellIndexSource", "PlateInputs"}
    found = []
    for path in SRC.rglob("*.py"):
        rel = str(path.relative_to(SRC))
        if rel in ("core/sources.py", "core/config.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
                names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)} | {
                    n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
                if names & classes:
                    found.append(f"{rel}:{node.lineno}")
    assert found == []


def test_both_families_are_one_model():
    classic = load_predict_yaml(DATA / "dev2d" / "predict.yml")
    boc = load_predict_yaml(DATA / "boc3d" / "predict.yml")
    assert type(classic) is type(boc) is PredictConfig
    assert (classic.family, classic.source.kind) == ("classic", "tracks")
    assert (boc.family, boc.source.kind) == ("bag_of_channels", "boc")
    # common settings change the same way for both; a source's own settings only where they belong
    for cfg in (classic, boc):
        assert cfg.with_overrides(batch_size=7, cpu_backend="eager").batch_size == 7
    with pytest.raises(ConfigError, match="unknown setting.*z_range for a Bag-of-Channels prediction"):
        boc.with_overrides(z_range=(0, 1))
    with pytest.raises(ConfigError, match="unknown setting.*z_window"):
        classic.with_overrides(z_window=3)
    assert pickle.loads(pickle.dumps(boc)) == boc  # (the work process gets it pickled)


# ------------------------------------------------------------------ the CLI and the dock: one validation


def _fields(**values):
    return types.SimpleNamespace(**{k: types.SimpleNamespace(value=v) for k, v in values.items()})


def _dock(**changes):
    """The Predict tab's fields, as :func:`predict_form.read_config` reads them (no Qt needed)."""
    fields = {"output": "out.zarr", "batch_size": 16, "ckpt": "model.ckpt", "overwrite": False,
              "allow_nonfinite": False, "device": "cpu", "umap": False, "pca": False,
              "channels": "Phase3D", "plate": str(DATA / "dev2d" / "plate.zarr"),
              "tracks": str(DATA / "dev2d" / "tracks"), "normalization": "fov_statistics", "z_start": 1, "z_stop": 2,
              "patch": 128, "final_patch": 128}
    fields.update(changes)
    dock = _fields(**fields)
    dock.yml_config = None
    dock.checks = types.SimpleNamespace(fovs_plate=None)
    dock.tracks_source = types.SimpleNamespace(active=None)  # "tracks from": the tracks folder, not a layer
    return dock


def _cli(*extra):
    from napari_dynaclr.cli import make_parser
    from napari_dynaclr.cli.predict import build_config

    args = make_parser().parse_args(
        ["predict", "--plate", str(DATA / "dev2d" / "plate.zarr"), "--tracks", str(DATA / "dev2d" / "tracks"),
         "--channels", "Phase3D", "--z-range", "1", "2", "--patch-size", "128", "--checkpoint", "model.ckpt",
         "--output", "out.zarr", "--device", "cpu", "--batch-size", "16", *extra])
    return build_config(args)


def test_the_dock_and_the_command_line_make_the_same_config():
    from napari_dynaclr._napari.widgets.predict_form import read_config

    assert read_config(_dock()) == _cli().with_overrides(devices=1, num_nodes=1, strategy="auto")


def test_the_dock_and_the_command_line_refuse_alike_in_their_own_words(capsys):
    from napari_dynaclr._napari.widgets._wording import error_message
    from napari_dynaclr._napari.widgets.predict_form import read_config
    from napari_dynaclr.cli import main

    with pytest.raises(ConfigError) as dock:
        read_config(_dock(channels="Phase3D, Phase3D"))
    with pytest.raises(ConfigError) as cli:
        _cli("--channels", "Phase3D", "Phase3D")
    assert dock.value.key == cli.value.key == "source_channel"
    assert dock.value.message == cli.value.message
    assert error_message(dock.value) == "'source channels' lists a channel twice: ['Phase3D', 'Phase3D']"
    assert main(["predict", "--plate", "p.zarr", "--tracks", "t", "--channels", "A", "A", "--z-range", "0", "1",
                 "--patch-size", "64", "--output", "o.zarr"]) == 2
    assert capsys.readouterr().err.strip() == "napari-dynaclr: error: --channels lists a channel twice: ['A', 'A']"


# ------------------------------------------------------------------ errors across the work process


def _error_classes():
    import napari_dynaclr._napari.cellmodel  # noqa: F401 - modules that used to define their own errors
    import napari_dynaclr.predict.batches  # noqa: F401

    out, stack = [], [DynaclrError]
    while stack:
        cls = stack.pop()
        out.append(cls)
        stack.extend(cls.__subclasses__())
    return out


def test_every_error_is_registered_and_crosses_as_data():
    classes = _error_classes()
    assert {"NonfiniteEmbeddings", "ExploreError", "PlateError", "ConfigError"} <= {c.__name__ for c in classes}
    for cls in classes:
        assert cls.__module__ == "napari_dynaclr.errors", cls  # every process knows every code
        assert errors.REGISTRY[cls.code] is cls
        exc = cls("{@batch_size} is wrong", remedy=Remedy("allow_nonfinite", purpose="to go on", otherwise="fix it"))
        for back in (errors.from_wire(exc.to_wire()), pickle.loads(pickle.dumps(exc))):
            assert type(back) is cls
            assert (back.message, back.key, back.remedy, str(back)) == (exc.message, exc.key, exc.remedy, str(exc))
    unknown = errors.from_wire({"code": "SomethingElse", "message": "boom"})
    assert type(unknown) is errors.WorkerCrashed and str(unknown) == "SomethingElse: boom"


def test_a_remedy_is_worded_by_each_front_end():
    from napari_dynaclr._napari.widgets._wording import error_message
    from napari_dynaclr.cli.wording import CLI

    exc = NonfiniteEmbeddings("3 of 9 embedding rows are NaN/Inf; nothing is written",
                              remedy=Remedy("allow_nonfinite", purpose="to write them as NaN rows"))
    assert exc.key == "allow_nonfinite"
    assert str(exc) == "3 of 9 embedding rows are NaN/Inf; nothing is written. Set allow_nonfinite to write them " \
                       "as NaN rows"
    assert exc.describe(CLI).endswith("nothing is written. Pass --allow-nonfinite to write them as NaN rows")
    assert error_message(exc).endswith("nothing is written. Tick 'allow non-finite values' (Predict > Advanced "
                                       "settings) to write them as NaN rows")
    missing = ConfigError("no output path", remedy=Remedy("output_path", None, joint=": "))
    assert missing.describe(CLI) == "no output path: give --output (or EmbeddingWriter output_path)"
    assert error_message(missing) == "no output path: choose an 'output store'"


def test_errors_keep_their_type_through_the_work_process(case_copy, conformance_ckpt, tmp_path):
    """A prediction in the plugin's work process whose model overflows: NonfiniteEmbeddings arrives as such (not
    as WorkerCrashed), with the setting that allows it, worded for the dock."""
    import torch

    from napari_dynaclr._napari import workers
    from napari_dynaclr._napari.widgets._wording import error_message
    from napari_dynaclr.model.checkpoint import read_state_dict

    root = case_copy("dev2d")
    sd = read_state_dict(conformance_ckpt("dev2d"))
    sd["model.projection.3.weight"] = torch.full_like(sd["model.projection.3.weight"], 3e38)
    ckpt = tmp_path / "overflow.ckpt"
    torch.save({"state_dict": sd, "pytorch-lightning_version": "2.6.6", "epoch": 0, "global_step": 0}, ckpt)
    cfg = load_predict_yaml(root / "predict.yml").with_overrides(ckpt_path=ckpt, output_path=tmp_path / "x.zarr",
                                                                 include_wells=["B/2"])
    job = workers.prediction_job(cfg, "cpu")
    with pytest.raises(NonfiniteEmbeddings) as info:
        while True:
            next(job)
    assert info.value.key == "allow_nonfinite" and info.value.remedy.key == "allow_nonfinite"
    text = error_message(info.value)
    assert "NaN/Inf embeddings" in text and "tick 'allow non-finite values'" in text and " --" not in text
    assert not (tmp_path / "x.zarr").exists()
