"""The DynaCLR encoder and its checkpoints (imports torch)."""

from napari_dynaclr.core.architecture import EncoderConfig, describe_config
from napari_dynaclr.model.checkpoint import (
    LoadedModel,
    check_state_dict,
    infer_config,
    load_checkpoint,
    model_from_state_dict,
    read_state_dict,
    resolve_config,
    save_checkpoint,
)
from napari_dynaclr.model.encoder import ContrastiveEncoder, StemDepthToChannels
from napari_dynaclr.model.weights import deterministic_encoder, deterministic_tensor

__all__ = [
    "ContrastiveEncoder", "EncoderConfig", "LoadedModel", "StemDepthToChannels", "check_state_dict",
    "describe_config", "deterministic_encoder", "deterministic_tensor", "infer_config", "load_checkpoint",
    "model_from_state_dict", "read_state_dict", "resolve_config", "save_checkpoint",
]
