"""The fused oneDNN CPU encoder (model/fast_cpu.py): automatic on float32 CPU runs, equal to the eager model
within float32 rounding, within VisCy's conformance bound on every case, checked on the first batch (eager
again if it ever deviates), and the cpu_backend setting validated up front."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import CASES, DATA
from napari_dynaclr.core.architecture import EncoderConfig
from napari_dynaclr.core.config import PredictConfig
from napari_dynaclr.core.predict_yml import load_predict_yaml
from napari_dynaclr.errors import ConfigError
from napari_dynaclr.model import fast_cpu
from napari_dynaclr.model.checkpoint import load_checkpoint
from napari_dynaclr.model.encoder import ContrastiveEncoder
from napari_dynaclr.predict.planners import plan_for
from napari_dynaclr.predict.single import predict_batches

TOL = 1e-4  # VisCy's float32 reference, as tests/test_conformance.py
needs_onednn = pytest.mark.skipif(not fast_cpu._ops_available(), reason="torch without oneDNN fused linear ops")
BACKENDS = ["onednn", pytest.param("openvino", marks=pytest.mark.skipif(
    not fast_cpu.openvino_available(), reason="openvino not installed (optional: pip install openvino)"))]


def _embed(case, ckpt, backend, info=None):
    cfg = load_predict_yaml(DATA / case / "predict.yml")
    model = load_checkpoint(ckpt).model
    plan = plan_for(cfg)  # a classic or a Bag-of-Channels plan
    try:
        out = list(predict_batches(plan, model, "cpu", cpu_backend=backend, backend_info=info))
    finally:
        plan.close()
    return np.concatenate([r.features for r in out]), np.concatenate([r.projections for r in out])


@needs_onednn
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES + ("boc2d_mip", "boc3d"))
def test_fast_backend_within_conformance(case, backend, conformance_ckpt, reference_arrays):
    """Fails if a fast CPU backend changes the numbers beyond float32 rounding."""
    ref = reference_arrays(case)
    info: dict = {}
    feats, projs = _embed(case, conformance_ckpt(case), backend, info)
    assert info["backend"] == backend, info
    assert info["probe_max_abs"] is not None and info["probe_max_abs"] <= 1e-5
    assert np.abs(feats - ref["features"]).max() <= TOL
    assert np.abs(projs - ref["projections"]).max() <= TOL
    eager_feats, eager_projs = _embed(case, conformance_ckpt(case), "eager")
    assert np.abs(feats - eager_feats).max() <= 2e-5  # observed ≤ 5e-6
    assert np.abs(projs - eager_projs).max() <= 2e-5


@needs_onednn
def test_auto_picks_the_fastest_installed_backend(conformance_ckpt):
    """The automatic path (what the CLI, napari and tests/test_conformance.py run) is a fast backend: the oneDNN
    blocks for a small run (OpenVINO's conversion would cost more than it saves), OpenVINO when installed from
    OPENVINO_MIN_CELLS cells on."""
    info: dict = {}
    _embed("dev3d2ch", conformance_ckpt("dev3d2ch"), "auto", info)  # a few dozen cells
    assert info["backend"] == "onednn", info
    assert info["probe_max_abs"] <= 1e-5
    model = ContrastiveEncoder(EncoderConfig("convnext_atto", 1, 1, (1, 4, 4), (1, 4, 4), 768, 32)).eval()
    x = torch.randn(2, 1, 1, 64, 80)  # a cell of 64 x 80 px is a fifth of a 160-px one
    for n_cells, want in ((5 * fast_cpu.OPENVINO_MIN_CELLS - 1, "onednn"),
                          (5 * fast_cpu.OPENVINO_MIN_CELLS, "openvino" if fast_cpu.openvino_available() else "onednn")):
        assert fast_cpu.choose_backend(model, "cpu", "32-true", "auto", example=x, n_cells=n_cells).backend == want
    if fast_cpu.openvino_available():  # an explicit choice ignores the size
        assert fast_cpu.choose_backend(model, "cpu", "32-true", "openvino", example=x, n_cells=5).backend == "openvino"


@needs_onednn
@pytest.mark.parametrize("name", ["convnext_tiny_3d", "convnext_atto_2d"])
def test_fused_model_equals_eager_with_large_layer_scale(name):
    """γ folded into fc2 must hold for trained γ (timm initialises it at 1e-6, which would hide errors)."""
    cfg = {"convnext_tiny_3d": EncoderConfig("convnext_tiny", 2, 30, (5, 4, 4), (5, 4, 4), 768, 32),
           "convnext_atto_2d": EncoderConfig("convnext_atto", 1, 1, (1, 4, 4), (1, 4, 4), 768, 32)}[name]
    torch.manual_seed(0)
    model = ContrastiveEncoder(cfg).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("gamma"):
                p.uniform_(0.2, 1.0)
    x = torch.randn(3, cfg.in_channels, cfg.in_stack_depth, 64, 64)
    choice = fast_cpu.choose_backend(model, "cpu", "32-true", "auto")
    assert choice.backend == "onednn"
    with torch.inference_mode():
        ref, got = model(x), choice.model(x)
    for r, g in zip(ref, got, strict=True):
        assert g.shape == r.shape and g.dtype == torch.float32
        assert (g - r).abs().max() <= 1e-5 * max(1.0, float(r.abs().max()))


@needs_onednn
def test_a_deviating_fused_model_falls_back_to_eager(conformance_ckpt, reference_arrays, monkeypatch):
    case = "dev2d"
    real = fast_cpu.FusedConvNeXtBlock.forward
    monkeypatch.setattr(fast_cpu.FusedConvNeXtBlock, "forward", lambda self, x: real(self, x) + 1e-3)
    monkeypatch.setattr(fast_cpu, "openvino_available", lambda: False)
    info: dict = {}
    with pytest.warns(UserWarning, match="deviates"):
        feats, projs = _embed(case, conformance_ckpt(case), "auto", info)
    assert info["backend"] == "eager" and info["probe_max_abs"] > 1e-5
    ref = reference_arrays(case)
    assert np.abs(feats - ref["features"]).max() <= TOL  # the first batch too: recomputed eagerly
    assert np.abs(projs - ref["projections"]).max() <= TOL
    with pytest.raises(ConfigError, match="deviates"):
        _embed(case, conformance_ckpt(case), "onednn")


def test_where_the_fused_model_does_not_apply():
    model = ContrastiveEncoder(EncoderConfig("convnext_atto", 1, 1, (1, 4, 4), (1, 4, 4), 768, 32)).eval()
    assert fast_cpu.choose_backend(model, "cpu", "32-true", "eager").backend == "eager"
    assert fast_cpu.choose_backend(model, "cpu", "32-true", "auto").backend == "onednn"  # no example: no OpenVINO
    assert fast_cpu.choose_backend(model, "cpu", "bf16-mixed", "auto").backend == "eager"
    assert fast_cpu.choose_backend(model, "cuda", "32-true", "auto").backend == "eager"
    for explicit in ("onednn", "openvino"):
        with pytest.raises(ConfigError, match="not float32|not installed"):
            fast_cpu.choose_backend(model, "cpu", "bf16-mixed", explicit)
    v2 = ContrastiveEncoder(EncoderConfig("convnextv2_atto", 1, 1, (1, 4, 4), (1, 4, 4), 768, 32)).eval()
    assert "GRN" in fast_cpu.why_not_fusable(v2)
    assert fast_cpu.choose_backend(v2, "cpu", "32-true", "auto").backend == "eager"
    assert "ContrastiveEncoder" in fast_cpu.why_not_fusable(torch.nn.Linear(2, 2))


def test_cpu_backend_is_validated_up_front(tmp_path, capsys):
    from napari_dynaclr.cli import main

    base = load_predict_yaml(DATA / "dev2d" / "predict.yml")
    assert base.cpu_backend == "auto"
    assert base.with_overrides(cpu_backend="eager").cpu_backend == "eager"
    with pytest.raises(ConfigError, match="cpu_backend 'fast'"):
        base.with_overrides(cpu_backend="fast")
    with pytest.raises(ConfigError, match="cpu_backend"):
        PredictConfig.classic(data_path="p", tracks_path="t", source_channel=["a"], z_range=(0, 1), cpu_backend=None)
    boc = load_predict_yaml(DATA / "boc3d" / "predict.yml")
    assert boc.family == "bag_of_channels" and boc.cpu_backend == "auto"
    with pytest.raises(ConfigError, match="cpu_backend"):
        boc.with_overrides(cpu_backend="ONEDNN")
    rc = main(["predict", "-c", str(DATA / "dev2d" / "predict.yml"), "--cpu-backend", "fast",
               "-o", str(tmp_path / "out.zarr")])
    assert rc != 0
    assert "--cpu-backend 'fast'" in capsys.readouterr().err
    assert not (tmp_path / "out.zarr").exists()
