"""napari sample data "DynaCLR demo": the demo's synthetic plate, tracks, checkpoint and predict.yml.

The files are generated once into a cache folder (``$NAPARI_DYNACLR_CACHE`` or
``~/.cache/napari-dynaclr/demo``); the layers returned are the first FOV's channels and its tracks.
Each layer's metadata carries the demo paths, which the main widget uses to pre-fill its fields.
"""

from __future__ import annotations

import os
from pathlib import Path

from napari_dynaclr.core.synthetic import SyntheticSpec

DEMO_SPEC = SyntheticSpec(wells=("A/1", "B/1"), fovs_per_well=1, timepoints=8, size=(256, 256), cells_per_fov=10)


def demo_folder() -> Path:
    root = os.environ.get("NAPARI_DYNACLR_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "napari-dynaclr" / "demo"


def ensure_demo(folder: Path | None = None, spec: SyntheticSpec | None = None) -> dict:
    """Create the demo inputs in *folder* unless they are already complete there; return the paths."""
    folder = Path(folder or demo_folder())
    paths = {"plate": folder / "plate.zarr", "tracks": folder / "tracks", "checkpoint": folder / "model.ckpt",
             "config": folder / "predict.yml", "truth": folder / "truth.csv", "output": folder / "embeddings.zarr"}
    if all(paths[k].exists() for k in ("plate", "tracks", "checkpoint", "config")):
        return paths
    import shutil

    from napari_dynaclr._napari.workers import work_process

    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    # the checkpoint is built with torch: in the work process, never in napari's
    work_process().call("demo_inputs", tmp, spec or DEMO_SPEC, umap=True)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return paths


def make_demo_sample(folder: Path | None = None):
    """npe2 sample-data command: layer data tuples of the demo's first FOV (images + tracks)."""
    from napari_dynaclr._napari import explore, layers
    from napari_dynaclr.core.plate import Plate
    from napari_dynaclr.core.tracks import INDEX_COLUMNS, find_tracks_csv, read_tracks

    paths = ensure_demo(folder)
    meta = {"dynaclr_demo": {k: str(v) for k, v in paths.items()}}
    with Plate(paths["plate"]) as plate:
        fov = plate.fovs[0]
        out = []
        for data, kwargs, kind in layers.fov_image_layers(fov, plate.channel_names):
            kwargs["metadata"] = {**kwargs["metadata"], **meta}
            out.append((data.compute(), kwargs, kind))
        df = read_tracks(find_tracks_csv(paths["tracks"], fov.name), fov.name)
        df.insert(0, "fov_name", fov.name)
        table = explore.cell_table(df[[c for c in INDEX_COLUMNS if c in df.columns]])
        ov = layers.fov_overlay(table, fov.name, z=fov.shape[2] > 1, scale=layers.image_scale(fov))
        out.append((ov.tracks, {"graph": ov.graph, "features": ov.features, "scale": ov.scale,
                                "name": f"{fov.name} tracks", "metadata": meta, "tail_length": 8,
                                "axis_labels": layers.axis_labels(len(ov.scale))}, "tracks"))
    return out
