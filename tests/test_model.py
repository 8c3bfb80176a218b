"""Encoder structure (VisCy state-dict keys), config inference and strict checkpoint loading."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from conftest import CASES, case_json
from napari_dynaclr.core.architecture import EncoderConfig
from napari_dynaclr.errors import CheckpointError, ConfigError
from napari_dynaclr.model.checkpoint import infer_config, load_checkpoint, read_state_dict, save_checkpoint
from napari_dynaclr.model.encoder import ContrastiveEncoder

CONFIGS = {
    "convnext_tiny_2d": (EncoderConfig("convnext_tiny", 1, 1, (1, 4, 4), (1, 4, 4), 768, 32), 194),
    "convnext_tiny_3d": (EncoderConfig("convnext_tiny", 2, 30, (5, 4, 4), (5, 4, 4), 768, 32), 194),
    "convnextv2_tiny": (EncoderConfig("convnextv2_tiny", 1, 15, (5, 4, 4), (5, 4, 4), 768, 32), 212),
    "resnet50": (EncoderConfig("resnet50", 1, 10, (5, 4, 4), (5, 4, 4), 2048, 128), 333),
}


@pytest.fixture(scope="module")
def models():
    return {name: ContrastiveEncoder(cfg) for name, (cfg, _) in CONFIGS.items()}


@pytest.mark.parametrize("name", CONFIGS)
def test_state_dict_keys_like_viscy(name, models):
    cfg, n_keys = CONFIGS[name]
    sd = models[name].state_dict()
    assert len(sd) == n_keys
    assert {k.split(".", 1)[0] for k in sd} == {"stem", "encoder", "projection"}
    assert not any(k.startswith(("encoder.stem.0.", "encoder.head.fc.", "encoder.conv1.", "encoder.fc.")) for k in sd)
    assert tuple(sd["projection.3.weight"].shape) == (cfg.projection_dim, cfg.embedding_dim)


def test_convnext_tiny_sentinel_keys(models):
    sd = models["convnext_tiny_2d"].state_dict()
    for key, shape in {
        "stem.conv.weight": (96, 1, 1, 4, 4),
        "stem.conv.bias": (96,),
        "encoder.head.norm.bias": (768,),
        "encoder.stages.0.blocks.0.conv_dw.bias": (96,),
        "encoder.stages.2.blocks.4.gamma": (384,),
        "projection.4.weight": (32,),
        "projection.1.num_batches_tracked": (),
    }.items():
        assert tuple(sd[key].shape) == shape
    assert tuple(models["convnext_tiny_3d"].state_dict()["stem.conv.weight"].shape) == (16, 2, 5, 4, 4)


@pytest.mark.parametrize("name", CONFIGS)
def test_infer_config_round_trip(name, models):
    cfg, _ = CONFIGS[name]
    sd = {"model." + k: v for k, v in models[name].state_dict().items()}
    assert infer_config(sd) == cfg


@pytest.mark.parametrize("name", ["convnext_tiny_3d", "resnet50"])
def test_forward_shapes(name, models):
    cfg, _ = CONFIGS[name]
    x = torch.randn(2, cfg.in_channels, cfg.in_stack_depth, 64, 64)
    with torch.inference_mode():
        f, p = models[name].eval()(x)
    assert f.shape == (2, cfg.num_features) and p.shape == (2, cfg.projection_dim)


@pytest.mark.parametrize("case", CASES)
def test_rebuilt_conformance_weights_match_sha256(case, conformance_ckpt):
    sd = read_state_dict(conformance_ckpt(case))
    h = hashlib.sha256()
    for k in sorted(sd):
        a = sd[k].numpy()
        h.update(k.encode())
        h.update(str(a.dtype).encode())
        h.update(str(tuple(a.shape)).encode())
        h.update(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes())
    assert h.hexdigest() == case_json(case)["model"]["weights"]["state_dict_sha256"]


def test_load_infers_config_and_is_eval(conformance_ckpt):
    loaded = load_checkpoint(conformance_ckpt("dev3d2ch"))
    assert loaded.inferred
    assert loaded.config == EncoderConfig.from_dict(case_json("dev3d2ch")["model"]["encoder_init_args"])
    assert not loaded.model.training
    assert loaded.n_parameters == case_json("dev3d2ch")["model"]["weights"]["n_parameters"]


def _save(sd, path):
    torch.save({"state_dict": sd, "pytorch-lightning_version": "2.6.6", "epoch": 0, "global_step": 0}, path)
    return path


def test_renamed_key_is_named(conformance_ckpt, tmp_path):
    sd = read_state_dict(conformance_ckpt("dev2d"))
    sd["model.encoder.head.norm.weightX"] = sd.pop("model.encoder.head.norm.weight")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(_save(sd, tmp_path / "bad.ckpt"))
    msg = str(err.value)
    assert "model.encoder.head.norm.weight" in msg and "model.encoder.head.norm.weightX" in msg
    assert "1 missing" in msg and "1 unexpected" in msg


def test_many_missing_keys_are_counted(conformance_ckpt, tmp_path):
    sd = read_state_dict(conformance_ckpt("dev2d"))
    for k in [k for k in sd if k.startswith("model.projection.")]:
        del sd[k]
    with pytest.raises(CheckpointError, match=r"14 missing key\(s\): model\.projection.*\(\+11 more\)"):
        load_checkpoint(_save(sd, tmp_path / "bad.ckpt"), CONFIGS["convnext_tiny_2d"][0])


def test_extra_key_and_wrong_shape(conformance_ckpt, tmp_path):
    sd = read_state_dict(conformance_ckpt("dev2d"))
    sd["model.auxiliary_heads.0.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="unexpected key.*model.auxiliary_heads.0.weight"):
        load_checkpoint(_save(sd, tmp_path / "extra.ckpt"))
    sd = read_state_dict(conformance_ckpt("dev2d"))
    sd["model.projection.0.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*model.projection.0.bias \(5,\) vs \(768,\)"):
        load_checkpoint(_save(sd, tmp_path / "shape.ckpt"), CONFIGS["convnext_tiny_2d"][0])


def test_explicit_config_contradicting_weights(conformance_ckpt):
    wrong = EncoderConfig("convnext_tiny", 2, 1, (1, 4, 4), (1, 4, 4), 768, 32)
    with pytest.raises(ConfigError, match=r"model.stem.conv.weight.*look like convnext_tiny \(in_channels=1"):
        load_checkpoint(conformance_ckpt("dev2d"), wrong)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "is empty"),
        (b"not a checkpoint at all", "not a PyTorch checkpoint"),
    ],
)
def test_unreadable_checkpoint_files(tmp_path, content, match):
    path = tmp_path / "x.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_truncated_missing_and_directory_checkpoints(conformance_ckpt, tmp_path):
    data = conformance_ckpt("dev2d").read_bytes()
    (tmp_path / "trunc.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.ckpt"):
        load_checkpoint(tmp_path / "trunc.ckpt")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(CheckpointError, match="is a folder, not a file"):
        load_checkpoint(tmp_path)


def test_checkpoint_of_another_architecture(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 2))
    path = _save({"model." + k: v for k, v in net.state_dict().items()}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a DynaCLR ContrastiveEncoder checkpoint"):
        load_checkpoint(path)
    torch.save({"epoch": 3}, tmp_path / "nosd.ckpt")
    with pytest.raises(CheckpointError, match="no 'state_dict'"):
        load_checkpoint(tmp_path / "nosd.ckpt")


def test_bare_encoder_state_dict_loads(tmp_path, models):
    model = models["convnext_tiny_2d"]
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    loaded = load_checkpoint(tmp_path / "bare.pt")
    assert loaded.config == CONFIGS["convnext_tiny_2d"][0]


def test_save_checkpoint_has_viscy_prefix(tmp_path, models):
    save_checkpoint(models["convnext_tiny_2d"], tmp_path / "m.ckpt")
    ckpt = torch.load(tmp_path / "m.ckpt", weights_only=True)
    assert all(k.startswith("model.") for k in ckpt["state_dict"]) and len(ckpt["state_dict"]) == 194


def test_invalid_encoder_configs():
    with pytest.raises(ConfigError, match="unknown encoder backbone 'vit'"):
        EncoderConfig(backbone="vit")
    with pytest.raises(ConfigError, match="cannot map depth 35"):
        EncoderConfig("convnext_tiny", 1, 35, (5, 4, 4), (5, 4, 4))
    with pytest.raises(ConfigError, match="unknown encoder argument"):
        EncoderConfig.from_dict({"backbone": "convnext_tiny", "in_chans": 1})


@pytest.mark.parametrize("damage, needle", [
    (lambda sd: {**sd, "model.projection.0.bias": "not a tensor"}, "model.projection.0.bias is a str, not a tensor"),
    (lambda sd: {**sd, 5: sd["model.projection.0.bias"]}, "state_dict key 5 is not a name"),
    (lambda sd: {**sd, "model.stem.conv.weight": sd["model.stem.conv.weight"][:0]}, "an empty stem"),
    (lambda sd: [1, 2], "empty or invalid 'state_dict'"),
])
def test_malformed_checkpoints_are_one_line(conformance_ckpt, tmp_path, capsys, damage, needle):
    """Hand-edited or corrupted checkpoints: `info` and `predict` both give one line, no traceback."""
    import torch

    from napari_dynaclr.cli import main

    sd = torch.load(conformance_ckpt("dev2d"), weights_only=False)["state_dict"]
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": damage(dict(sd))}, bad)
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("napari-dynaclr: error:") and needle in err[0], err
