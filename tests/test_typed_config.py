"""The typed predict.yml schema: a wrongly typed value, a hostile or broken YAML file, or a reduction argument
that UMAP/PCA/PHATE would refuse is one clear line naming the file and key, exit 2, at parse time (before any
data is read: the plate and tracks the configs below point to do not exist)."""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from napari_dynaclr.cli import main
from napari_dynaclr.core.config import PredictConfig
from napari_dynaclr.core.inputs import MAX_YAML_BYTES
from napari_dynaclr.core.predict_yml import load_predict_yaml, parse_predict_config
from napari_dynaclr.core.schema import check_reduction_kwargs
from napari_dynaclr.errors import ConfigError

DATA = Path(__file__).parent / "data"
BASE = yaml.safe_load((DATA / "dev2d" / "predict.yml").read_text())
PROG = "napari-dynaclr: error: "


def _data(d):
    return d["data"]["init_args"]


def _enc(d):
    return d["model"]["init_args"]["encoder"]["init_args"]


def _writer(d):
    return d["trainer"]["callbacks"][0]["init_args"]


def _norm(d, i=0):
    return _data(d)["normalizations"][i]["init_args"]


def write_yml(tmp_path: Path, edit=None, name: str = "predict.yml") -> Path:
    doc = copy.deepcopy(BASE)
    if edit is not None:
        edit(doc)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def cli_error(path: Path, capsys) -> str:
    """Run ``predict -c path``; assert exit 2 and exactly one stderr line; return that line."""
    code = main(["predict", "-c", str(path)])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(PROG), lines[0]
    return lines[0][len(PROG):]


def _percentiles(lower):
    return {"class_path": "viscy_transforms.ScaleIntensityRangePercentilesd",
            "init_args": {"keys": ["Phase3D"], "lower": lower, "upper": 99}}


# (id, edit, dotted key, the value as shown after "got")
WRONG_TYPES = [
    # data
    ("num_workers-word", lambda d: _data(d).update(num_workers="four"), "data.init_args.num_workers", "'four'"),
    ("batch_size-quoted", lambda d: _data(d).update(batch_size="16"), "data.init_args.batch_size", "'16'"),
    ("batch_size-zero", lambda d: _data(d).update(batch_size=0), "data.init_args.batch_size", "0"),
    ("source_channel-int", lambda d: _data(d).update(source_channel=[405]), "data.init_args.source_channel", "[405]"),
    ("z_range-string", lambda d: _data(d).update(z_range="1-2"), "data.init_args.z_range", "'1-2'"),
    ("z_range-three", lambda d: _data(d).update(z_range=[0, 1, 2]), "data.init_args.z_range", "[0, 1, 2]"),
    ("patch-float", lambda d: _data(d).update(initial_yx_patch_size=[128.5, 128]),
     "data.init_args.initial_yx_patch_size", "[128.5, 128]"),
    ("wells-string", lambda d: _data(d).update(fit_include_wells="A/1"), "data.init_args.fit_include_wells", "'A/1'"),
    ("predict_cells-word", lambda d: _data(d).update(predict_cells="yes"), "data.init_args.predict_cells", "'yes'"),
    ("track_ids-words", lambda d: _data(d).update(predict_cells=True, include_fov_names=["A/1/0"],
                                                  include_track_ids=["one"]),
     "data.init_args.include_track_ids", "['one']"),
    ("ignored-key-typed", lambda d: _data(d).update(caching="no"), "data.init_args.caching", "'no'"),
    ("normalizations-mapping", lambda d: _data(d).update(normalizations={"a": 1}),
     "data.init_args.normalizations", "{'a': 1}"),
    ("norm-keys-int", lambda d: _norm(d).update(keys=5), "data.init_args.normalizations[0].init_args.keys", "5"),
    ("norm-lower-word", lambda d: _data(d)["normalizations"].append(_percentiles("fifty")),
     "data.init_args.normalizations[1].init_args.lower", "'fifty'"),
    ("norm-entry-string", lambda d: _data(d)["normalizations"].append("NormalizeSampled"),
     "data.init_args.normalizations[1]", "'NormalizeSampled'"),
    # model
    ("in_channels-quoted", lambda d: _enc(d).update(in_channels="2"),
     "model.init_args.encoder.init_args.in_channels", "'2'"),
    ("stem_kernel-word", lambda d: _enc(d).update(stem_kernel_size="abc"),
     "model.init_args.encoder.init_args.stem_kernel_size", "'abc'"),
    ("stem_stride-zero", lambda d: _enc(d).update(stem_stride=[1, 0, 4]),
     "model.init_args.encoder.init_args.stem_stride", "[1, 0, 4]"),
    ("stem_stride-two", lambda d: _enc(d).update(stem_stride=[4, 4]),
     "model.init_args.encoder.init_args.stem_stride", "[4, 4]"),
    ("drop_path-quoted", lambda d: _enc(d).update(drop_path_rate="0.1"),
     "model.init_args.encoder.init_args.drop_path_rate", "'0.1'"),
    ("pretrained-word", lambda d: _enc(d).update(pretrained="no"),
     "model.init_args.encoder.init_args.pretrained", "'no'"),
    ("backbone-int", lambda d: _enc(d).update(backbone=18), "model.init_args.encoder.init_args.backbone", "18"),
    ("ckpt_path-int", lambda d: d.update(ckpt_path=5), "ckpt_path", "5"),
    # EmbeddingWriter
    ("overwrite-word", lambda d: _writer(d).update(overwrite="yes"),
     "trainer.callbacks[EmbeddingWriter].overwrite", "'yes'"),
    ("output_path-list", lambda d: _writer(d).update(output_path=["a.zarr"]),
     "trainer.callbacks[EmbeddingWriter].output_path", "['a.zarr']"),
    ("write_interval-word", lambda d: _writer(d).update(write_interval="sometimes"),
     "trainer.callbacks[EmbeddingWriter].write_interval", "'sometimes'"),
    ("umap_kwargs-list", lambda d: _writer(d).update(umap_kwargs=[2, 15]),
     "trainer.callbacks[EmbeddingWriter].umap_kwargs", "[2, 15]"),
    ("embedding_key-int", lambda d: _writer(d).update(embedding_key=1),
     "trainer.callbacks[EmbeddingWriter].embedding_key", "1"),
    # trainer
    ("num_nodes-quoted", lambda d: d["trainer"].update(num_nodes="2"), "trainer.num_nodes", "'2'"),
    ("devices-float", lambda d: d["trainer"].update(devices=1.5), "trainer.devices", "1.5"),
    ("precision-float", lambda d: d["trainer"].update(precision=32.0), "trainer.precision", "32.0"),
    ("accelerator-list", lambda d: d["trainer"].update(accelerator=["cpu"]), "trainer.accelerator", "['cpu']"),
    ("callbacks-int", lambda d: d["trainer"].update(callbacks=5), "trainer.callbacks", "5"),
]


def test_the_wrong_types_cover_every_section():
    sections = {case[2].split(".")[0] for case in WRONG_TYPES}
    assert {"data", "model", "trainer", "ckpt_path"} <= sections
    assert len({case[2] for case in WRONG_TYPES}) >= 8
    assert any("EmbeddingWriter" in case[2] for case in WRONG_TYPES)


@pytest.mark.parametrize("case_id, edit, key, got", WRONG_TYPES, ids=[c[0] for c in WRONG_TYPES])
def test_wrong_type_is_one_line_naming_file_and_key(case_id, edit, key, got, tmp_path, capsys):
    path = write_yml(tmp_path, edit)
    with pytest.raises(ConfigError) as info:
        load_predict_yaml(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: {key}: expected "), msg
    assert f", got {got}" in msg, msg
    assert "\n" not in msg
    assert cli_error(path, capsys) == msg


def test_a_message_names_how_many_more_problems_there_are(tmp_path):
    path = write_yml(tmp_path, lambda d: _data(d).update(z_range=[1, "x"], batch_size="3", num_workers=-1))
    with pytest.raises(ConfigError, match=r"data\.init_args\.z_range: .* \(\+2 more problems\)$"):
        load_predict_yaml(path)


def test_a_long_value_is_shown_truncated(tmp_path):
    path = write_yml(tmp_path, lambda d: _data(d).update(num_workers="x" * 5000))
    with pytest.raises(ConfigError) as info:
        load_predict_yaml(path)
    got = str(info.value).split(", got ", 1)[1]
    assert len(got) <= 60 and "..." in got


def test_a_config_without_the_optional_sections_still_parses_with_defaults():
    doc = copy.deepcopy(BASE)
    doc.pop("trainer")
    doc["model"]["init_args"].pop("encoder")
    cfg = parse_predict_config(doc)
    assert cfg.encoder is None and cfg.output_path is None and cfg.devices == 1


@pytest.mark.parametrize("case", ["dev2d", "dev3d2ch"])
def test_the_reference_configs_parse_as_before(case):
    cfg = load_predict_yaml(DATA / case / "predict.yml")
    raw = yaml.safe_load((DATA / case / "predict.yml").read_text())
    data = raw["data"]["init_args"]
    assert cfg.source.source_channel == data["source_channel"]
    assert cfg.source.z_range == tuple(data["z_range"])
    assert cfg.batch_size == data["batch_size"] and cfg.num_workers == data["num_workers"]
    assert len(cfg.source.normalizations) == len(data["normalizations"])
    assert cfg.encoder.to_dict() == {k: v for k, v in raw["model"]["init_args"]["encoder"]["init_args"].items()
                                     if k != "pretrained"}
    assert cfg.precision == "32-true" and cfg.accelerator == "cpu" and cfg.devices == 1
    assert cfg.ckpt_path == DATA / case / "model.ckpt"


def test_values_yaml_types_loosely_but_validly_still_parse():
    """Tuples (a dict built in Python), an int precision, devices as a list, num_workers 0 (→ 1)."""
    doc = copy.deepcopy(BASE)
    _data(doc).update(z_range=(1, 2), initial_yx_patch_size=128, final_yx_patch_size=None, num_workers=0)
    doc["trainer"].update(precision=32, devices=[0])
    _writer(doc).update(umap_kwargs={"n_components": 2, "n_neighbors": 15, "min_dist": 0.1, "normalize": False},
                        pca_kwargs={"n_components": None}, overwrite=True)
    cfg = parse_predict_config(doc)
    assert cfg.precision == "32" and cfg.devices == [0] and cfg.num_workers == 1 and cfg.overwrite
    assert cfg.source.z_range == (1, 2) and cfg.source.patch_size == (128, 128)


def test_loading_a_config_with_umap_kwargs_does_not_import_umap(tmp_path):
    """The napari process loads predict.yml files and must stay free of umap (numba)."""
    path = write_yml(tmp_path, lambda d: _writer(d).update(umap_kwargs={"n_neighbors": 15, "min_dist": 0.1}))
    code = textwrap.dedent(f"""
        import sys
        from napari_dynaclr.core.predict_yml import load_predict_yaml
        cfg = load_predict_yaml({str(path)!r})
        assert cfg.umap_kwargs == {{"n_neighbors": 15, "min_dist": 0.1}}
        try:
            load_predict_yaml({str(write_yml(tmp_path, lambda d: _writer(d).update(umap_kwargs={"foo": 1}),
                                             "bad.yml"))!r})
        except Exception as exc:
            print(type(exc).__name__, exc)
        print("umap" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "False", out.stdout
    assert lines[0].startswith("ConfigError ") and "unknown argument 'foo' for UMAP" in lines[0]


# --------------------------------------------------------------------------------------------------
# hostile or broken files


def test_non_utf8_file(tmp_path, capsys):
    path = tmp_path / "predict.yml"
    path.write_bytes(yaml.safe_dump(BASE).replace("Phase3D", "Phasé3D").encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_predict_yaml(path)
    assert str(info.value) == f"config file {path} is not UTF-8 text"
    assert cli_error(path, capsys) == f"config file {path} is not UTF-8 text"


def test_binary_file(tmp_path, capsys):
    path = tmp_path / "predict.yml"
    path.write_bytes(bytes(range(256)) * 4)
    assert cli_error(path, capsys) == f"config file {path} is not UTF-8 text"


def test_a_bom_is_accepted(tmp_path):
    path = tmp_path / "predict.yml"
    path.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(BASE).encode())
    assert load_predict_yaml(path).source.source_channel == ["Phase3D"]


def billion_laughs(levels: int = 9, width: int = 10) -> str:
    """~1.5 KB of YAML (one flow mapping) that expands to width**levels values if anything expands it."""
    items = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels + 1):
        items.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "{" + ", ".join(items) + "}"


# where the bomb goes: a whole document, a used value, an ignored value, reduction kwargs, a normalization arg
BOMB_SITES = {
    "document": None,
    "data-value": ("    fit_exclude_fovs: null\n", "    fit_exclude_fovs: {bomb}\n"),
    "ignored-value": ("  init_args:\n    encoder:", "  init_args:\n    lr: {bomb}\n    encoder:"),
    "umap_kwargs": ("      umap_kwargs: null", "      umap_kwargs: {{n_neighbors: {bomb}}}"),
    "normalization": ("        level: fov_statistics", "        level: {bomb}"),
}


@pytest.mark.parametrize("site", list(BOMB_SITES))
def test_alias_bomb_is_refused_without_expanding_it(site, tmp_path, capsys):
    """The refusal counts values as it walks and stops at 10⁵ (the message says so): expanding the 10¹⁰ values
    would never end."""
    bomb = billion_laughs()
    if BOMB_SITES[site] is None:
        text = bomb + "\n"
    else:
        old, new = BOMB_SITES[site]
        doc = copy.deepcopy(BASE)
        _data(doc)["fit_exclude_fovs"] = None
        text = yaml.safe_dump(doc)
        assert text.count(old) == 1, old
        text = text.replace(old, new.format(bomb=bomb))
    path = tmp_path / "predict.yml"
    path.write_text(text)
    assert path.stat().st_size < 4096
    with pytest.raises(ConfigError) as info:
        load_predict_yaml(path)
    msg = str(info.value)
    assert msg == f"config file {path}: the YAML expands to more than 100000 values (aliases?); refusing"
    assert len(msg) < 500
    assert cli_error(path, capsys) == msg


def test_a_bomb_given_as_a_document_is_refused_too():
    level = ["lol"] * 10
    for _ in range(9):
        level = [level] * 10
    doc = copy.deepcopy(BASE)
    doc["model"]["init_args"]["bombs"] = level
    with pytest.raises(ConfigError, match="expands to more than 100000 values"):
        parse_predict_config(doc, source="doc")


def test_a_recursive_alias_is_refused(tmp_path, capsys):
    path = tmp_path / "predict.yml"
    path.write_text(yaml.safe_dump(BASE) + "loop: &loop [*loop]\n")
    expected = f"config file {path}: the YAML nests deeper than 100 levels (a recursive alias?); refusing"
    assert cli_error(path, capsys) == expected


def test_deep_nesting_is_refused(tmp_path, capsys):
    path = tmp_path / "predict.yml"
    path.write_text("a: " + "[" * 150 + "]" * 150 + "\n")
    assert "nests deeper than 100 levels" in cli_error(path, capsys)
    path.write_text("a: " + "[" * 20000 + "]" * 20000 + "\n")  # the YAML parser itself recurses
    assert "nests deeper than 100 levels" in cli_error(path, capsys)


def test_huge_file_is_refused_before_parsing(tmp_path, capsys):
    path = tmp_path / "predict.yml"
    with path.open("wb") as fh:  # sparse: no 10 MB written
        fh.truncate(MAX_YAML_BYTES + 1)
    msg = cli_error(path, capsys)  # (parsing it would give another message: 10 MB of NUL bytes)
    assert msg == (f"config file {path} is larger than 10 MB ({MAX_YAML_BYTES + 1} bytes); a config file is a few KB: "
                   "refusing")


def test_invalid_date_is_not_valid_yaml(tmp_path, capsys):
    path = write_yml(tmp_path)
    path.write_text(path.read_text() + "when: 2024-02-30\n")
    assert cli_error(path, capsys).startswith(f"config file {path} is not valid YAML: day is out of range")


def test_printed_messages_are_capped_at_500_characters(tmp_path, capsys):
    long_names = {("x" * 900) + str(i): 1 for i in range(5)}
    path = write_yml(tmp_path, lambda d: _norm(d).update(long_names))
    with pytest.raises(ConfigError) as info:
        load_predict_yaml(path)
    assert len(str(info.value)) > 500
    msg = cli_error(path, capsys)
    assert len(msg) == 500 and msg.endswith("…")
    assert msg.startswith(f"{path}: data.init_args.normalizations[0]: ")


# --------------------------------------------------------------------------------------------------
# reduction kwargs

WRITER = "trainer.callbacks[EmbeddingWriter]"


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"umap_kwargs": {"foo": 1}}, "umap_kwargs: unknown argument 'foo' for UMAP (accepted: "),
        ({"umap_kwargs": {"n_neigbors": 5}}, "umap_kwargs: unknown argument 'n_neigbors' for UMAP "
                                             "(accepted: n_neighbors, "),
        ({"pca_kwargs": {"n_comp": 8}}, "pca_kwargs: unknown argument 'n_comp' for PCA "
                                        "(accepted: n_components, normalize_features)"),
        ({"phate_kwargs": {"bogus": 1}}, "phate_kwargs: unknown argument 'bogus' for PHATE (accepted: "),
        ({"phate_kwargs": {"verbose": 1}}, "phate_kwargs: unknown argument 'verbose' for PHATE"),
        ({"pca_kwargs": {"n_components": "eight"}}, "pca_kwargs.n_components: expected a positive integer or null, "
                                                    "got 'eight'"),
        ({"pca_kwargs": {"n_components": 8.0}}, "pca_kwargs.n_components: expected a positive integer or null, "
                                                "got 8.0"),
        ({"umap_kwargs": {"n_components": 0}}, "umap_kwargs.n_components: expected a positive integer, got 0"),
        ({"umap_kwargs": {"n_components": True}}, "umap_kwargs.n_components: expected a positive integer, got True"),
        ({"umap_kwargs": {"n_neighbors": 1}}, "umap_kwargs.n_neighbors: expected an integer >= 2, got 1"),
        ({"umap_kwargs": {"normalize": "yes"}}, "umap_kwargs.normalize: expected true or false, got 'yes'"),
        ({"phate_kwargs": {"knn": "five"}}, "phate_kwargs.knn: expected a positive integer, got 'five'"),
    ],
)
def test_bad_reduction_kwargs(kwargs, needle, tmp_path, capsys):
    path = write_yml(tmp_path, lambda d: _writer(d).update(kwargs))
    with pytest.raises(ConfigError) as info:
        load_predict_yaml(path)
    assert str(info.value).startswith(f"{path}: {WRITER}.{needle}"), str(info.value)
    assert cli_error(path, capsys) == str(info.value)


def test_check_reduction_kwargs_for_flags_built_configs():
    """The config refuses them when it is made (its validation runs check_reduction_kwargs)."""
    import types

    with pytest.raises(ConfigError, match=r"^umap_kwargs: unknown argument 'foo' for UMAP \(accepted: "):
        PredictConfig.plain("plate.zarr", "tracks", "Phase3D", (0, 1), 64, umap_kwargs={"foo": 1})
    with pytest.raises(ConfigError, match=r"^pca_kwargs\.n_components: expected a positive integer or null, "):
        PredictConfig.plain("plate.zarr", "tracks", "Phase3D", (0, 1), 64, pca_kwargs={"n_components": "2"})
    with pytest.raises(ConfigError, match=r"^pca_kwargs: expected a mapping of PCA arguments or null, got \[8\]$"):
        PredictConfig.plain("plate.zarr", "tracks", "Phase3D", (0, 1), 64, pca_kwargs=[8])
    bad = types.SimpleNamespace(pca_kwargs=[8], umap_kwargs=None, phate_kwargs=None)
    with pytest.raises(ConfigError, match=r"^pca_kwargs: expected a mapping of PCA arguments or null, got \[8\]"):
        check_reduction_kwargs(bad)
    with pytest.raises(ConfigError, match=r"^cfg\.yml: trainer\.callbacks\[EmbeddingWriter\]\.pca_kwargs: "):
        check_reduction_kwargs(bad, source="cfg.yml")
    ok = PredictConfig.plain("plate.zarr", "tracks", "Phase3D", (0, 1), 64, umap_kwargs={"n_neighbors": 15},
                             pca_kwargs={"n_components": 8}, phate_kwargs=None)
    check_reduction_kwargs(ok)


@pytest.mark.parametrize("wrapper, kwargs_key", [("pca", "pca_kwargs"), ("umap", "umap_kwargs"),
                                                  ("phate", "phate_kwargs")])
def test_every_argument_of_our_reduction_wrappers_is_accepted(wrapper, kwargs_key):
    """The check accepts our wrappers' own arguments from their schemas (it never imports the wrappers' module:
    umap-learn): a wrapper argument missing from its schema would be refused in a predict.yml."""
    import inspect

    from napari_dynaclr.core import reduce

    params = list(inspect.signature(getattr(reduce, wrapper)).parameters.values())[1:]  # 0: the data matrix
    own = {p.name: p.default for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    assert own
    # each argument with its default value passes the check (a name the check does not know is refused)
    fields = {"umap_kwargs": None, "pca_kwargs": None, "phate_kwargs": None}
    fields[kwargs_key] = {k: v for k, v in own.items() if v is not None}
    if wrapper == "phate" and importlib.util.find_spec("phate") is None:
        # every argument name is known (an unknown one is refused first); the missing package is the one refusal
        with pytest.raises(ConfigError, match="optional 'phate' package is not installed"):
            PredictConfig.plain("plate.zarr", "tracks", "Phase3D", (0, 1), 64, **fields)
    else:
        check_reduction_kwargs(PredictConfig.plain("plate.zarr", "tracks", "Phase3D", (0, 1), 64, **fields))


def test_phate_asked_for_without_the_package_fails_at_parse_time(tmp_path, capsys):
    path = write_yml(tmp_path, lambda d: _writer(d).update(phate_kwargs={"knn": 5, "decay": 40, "t": "auto"}))
    if importlib.util.find_spec("phate") is not None:
        assert load_predict_yaml(path).phate_kwargs == {"knn": 5, "decay": 40, "t": "auto"}
        return
    assert cli_error(path, capsys) == (
        f"{path}: {WRITER}.phate_kwargs: PHATE is asked for but the optional 'phate' package is not installed "
        "(pip install phate, or set phate_kwargs to null)"
    )
