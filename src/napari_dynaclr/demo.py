"""The demo: a synthetic plate with tracked cells, a deterministic checkpoint, a VisCy predict.yml, and
a prediction with UMAP — all offline. The napari sample data uses the same generator."""

from __future__ import annotations

from pathlib import Path

import yaml

from napari_dynaclr.core.output import OwnedFolder, temporary_writer
from napari_dynaclr.core.reduce import DEFAULT_PCA_KWARGS, DEFAULT_UMAP_KWARGS
from napari_dynaclr.core.synthetic import SyntheticSpec, make_plate

DEMO_ENCODER = {
    "backbone": "convnext_tiny",
    "in_channels": 2,
    "in_stack_depth": 1,
    "stem_kernel_size": [1, 4, 4],
    "stem_stride": [1, 4, 4],
    "embedding_dim": 768,
    "projection_dim": 32,
    "drop_path_rate": 0.0,
}
DEMO_PATCH = 64


def demo_config(out_dir: Path, output: str = "embeddings.zarr", umap: bool = True) -> dict:
    """A VisCy predict.yml (as a dict) for the demo folder; paths are relative to it."""
    return {
        "seed_everything": 42,
        "trainer": {
            "accelerator": "auto",
            "strategy": "auto",
            "devices": 1,
            "num_nodes": 1,
            "precision": "32-true",
            "logger": False,
            "inference_mode": True,
            "callbacks": [
                {
                    "class_path": "viscy_utils.callbacks.embedding_writer.EmbeddingWriter",
                    "init_args": {
                        "output_path": output,
                        "pca_kwargs": dict(DEFAULT_PCA_KWARGS),
                        "umap_kwargs": dict(DEFAULT_UMAP_KWARGS) if umap else None,
                        "phate_kwargs": None,
                    },
                }
            ],
        },
        "model": {
            "class_path": "dynaclr.engine.ContrastiveModule",
            "init_args": {
                "encoder": {"class_path": "viscy_models.contrastive.ContrastiveEncoder", "init_args": DEMO_ENCODER},
                "example_input_array_shape": [1, 2, 1, DEMO_PATCH, DEMO_PATCH],
            },
        },
        "data": {
            "class_path": "viscy_data.triplet.TripletDataModule",
            "init_args": {
                "data_path": "plate.zarr",
                "tracks_path": "tracks",
                "source_channel": ["Phase3D", "RFP"],
                "z_range": [0, 1],
                "batch_size": 32,
                "num_workers": 2,
                "initial_yx_patch_size": [DEMO_PATCH, DEMO_PATCH],
                "final_yx_patch_size": [DEMO_PATCH, DEMO_PATCH],
                "normalizations": [
                    {
                        "class_path": "viscy_transforms.NormalizeSampled",
                        "init_args": {
                            "keys": ["Phase3D"], "level": "fov_statistics", "subtrahend": "mean", "divisor": "std",
                        },
                    },
                    {
                        "class_path": "viscy_transforms.ScaleIntensityRangePercentilesd",
                        "init_args": {"keys": ["RFP"], "lower": 50, "upper": 99, "b_min": 0.0, "b_max": 1.0},
                    },
                ],
            },
        },
        "return_predictions": False,
        "ckpt_path": "model.ckpt",
    }


def demo_folder(out_dir: str | Path, what: str = "demo folder",
                hint: str = "choose another --out") -> OwnedFolder:
    """The demo folder *out_dir* as an :class:`~napari_dynaclr.core.output.OwnedFolder`: hold it (``with``) to
    write a demo; it replaces or removes only the entries an earlier demo recorded in its manifest, unchanged."""
    return OwnedFolder(out_dir, what, "the demo", hint)


def make_demo_inputs(out_dir: str | Path, spec: SyntheticSpec | None = None, umap: bool = True,
                     overwrite: bool = False, what: str = "demo folder", hint: str = "choose another --out") -> dict:
    """Write plate.zarr, tracks/, model.ckpt, predict.yml and truth.csv into *out_dir*: an empty (or new) folder,
    or with *overwrite* one holding an earlier demo whose entries are unchanged (:func:`demo_folder`; *what* and
    *hint* word its refusals)."""
    with demo_folder(out_dir, what, hint) as owned:
        owned.clear(overwrite)
        return write_demo_inputs(owned, spec, umap)


def write_demo_inputs(owned: OwnedFolder, spec: SyntheticSpec | None = None, umap: bool = True) -> dict:
    """Write the demo's inputs as new entries of the held demo folder *owned*, each recorded in its manifest."""
    from napari_dynaclr.core.architecture import EncoderConfig
    from napari_dynaclr.model.weights import deterministic_encoder

    out = owned.folder
    paths = make_plate(out, spec, owned=owned)
    owned.add_text("truth.csv", paths["truth"].to_csv(index=False))
    model = deterministic_encoder(EncoderConfig.from_dict(DEMO_ENCODER), salt="demo")
    owned.write_entries(["model.ckpt"], lambda staging: _write_checkpoint(staging / "model.ckpt", model))
    owned.add_text("predict.yml", yaml.safe_dump(demo_config(out, umap=umap), sort_keys=False))
    return {"plate": paths["plate"], "tracks": paths["tracks"], "checkpoint": out / "model.ckpt",
            "config": out / "predict.yml", "truth": out / "truth.csv", "output": out / "embeddings.zarr"}


@temporary_writer
def _write_checkpoint(tmp: Path, model) -> None:
    from napari_dynaclr.model.checkpoint import save_checkpoint

    save_checkpoint(model, tmp)


def summarize(adata, truth_csv: Path | None = None) -> list[str]:
    """A few lines describing a demo store (and how well embeddings separate the hidden cell types)."""
    import numpy as np
    import pandas as pd

    lines = [
        f"cells: {adata.n_obs} in {adata.obs['fov_name'].nunique()} FOVs, "
        f"{adata.obs.groupby('fov_name', observed=True)['track_id'].nunique().sum()} tracks",
        f"X: {adata.X.shape} {adata.X.dtype}; obsm: {', '.join(sorted(adata.obsm))}",
    ]
    if truth_csv is not None and Path(truth_csv).exists():
        truth = pd.read_csv(truth_csv)
        obs = adata.obs[["fov_name", "track_id", "t"]].astype({"fov_name": str}).reset_index(drop=True)
        lab = obs.merge(truth, on=["fov_name", "track_id", "t"], how="left")
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import cross_val_score

        for col in ("cell_type", "infected"):
            y = lab[col].astype(str).to_numpy()
            if len(set(y)) < 2:
                continue
            acc = cross_val_score(LogisticRegression(max_iter=2000), np.asarray(adata.X), y, cv=3).mean()
            lines.append(f"linear probe on features, {col}: {acc:.2f} accuracy (3-fold)")
    return lines
