"""napari sample data "DynaCLR demo": the demo's synthetic plate, tracks, checkpoint and predict.yml.

The files live in a cache folder (``$NAPARI_DYNACLR_CACHE`` or ``~/.cache/napari-dynaclr/demo``), written and
recorded as the demo's (:func:`napari_dynaclr.demo.demo_folder`: a folder holding anything else is never
emptied or replaced). Once
they are there, the sample is the first FOV read lazily from the plate plus its tracks. The first time,
napari gets the first FOV computed in memory (the same pixels the plate will hold, a fraction of a second)
while the work process writes the plate and builds the checkpoint with torch (about 15 s) in the
background, with a progress bar in napari's activity dock. Each layer's metadata carries the demo paths;
the DynaCLR dock fills its fields from them as soon as the files are complete
(:func:`when_demo_ready`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from napari_dynaclr.core.synthetic import SyntheticSpec

DEMO_SPEC = SyntheticSpec(wells=("A/1", "B/1"), fovs_per_well=1, timepoints=8, size=(256, 256), cells_per_fov=10)
#: the files that make a demo folder complete
REQUIRED = ("plate", "tracks", "checkpoint", "config")

_BUILDS: dict[Path, object] = {}  # folder -> the running build's worker
_WAITING: dict[Path, list[Callable[[], None]]] = {}  # folder -> what to call once it is complete


def demo_folder() -> Path:
    root = os.environ.get("NAPARI_DYNACLR_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "napari-dynaclr" / "demo"


def demo_paths(folder: Path | None = None) -> dict[str, Path]:
    folder = Path(folder or demo_folder())
    return {"plate": folder / "plate.zarr", "tracks": folder / "tracks", "checkpoint": folder / "model.ckpt",
            "config": folder / "predict.yml", "truth": folder / "truth.csv", "output": folder / "embeddings.zarr"}


def demo_complete(folder: Path | None = None) -> bool:
    """Whether the demo's manifest in *folder* records every required entry as written, and they are there."""
    from napari_dynaclr.core.output import OwnedFolder

    folder = Path(folder or demo_folder())
    paths = demo_paths(folder)
    return folder.is_dir() and OwnedFolder(folder).has(paths[k].name for k in REQUIRED)


def build_demo(folder: Path | None = None, spec: SyntheticSpec | None = None) -> dict[str, Path]:
    """Create the demo inputs in *folder* unless they are complete there (blocking; the checkpoint is built
    with torch in the work process, never in napari's); return the paths. An incomplete earlier build is replaced
    only where the demo's manifest records it unchanged: a folder holding anything else is refused (one line)."""
    from napari_dynaclr._napari.workers import work_process

    folder = Path(folder or demo_folder())
    paths = demo_paths(folder)
    if demo_complete(folder):
        return paths
    work_process().call("demo_inputs", folder, spec or DEMO_SPEC, umap=True, overwrite=True,
                        what="napari sample data folder",
                        hint="remove them, or set NAPARI_DYNACLR_CACHE to another folder")
    return paths


def demo_build(folder: Path | None = None):
    """The worker building the demo in *folder* now, or None."""
    return _BUILDS.get(Path(folder or demo_folder()))


def when_demo_ready(folder: Path, callback: Callable[[], None]) -> None:
    """Call *callback* (on the GUI thread) once the demo in *folder* is complete — now, if it is."""
    folder = Path(folder)
    if demo_complete(folder):
        callback()
    else:
        _WAITING.setdefault(folder, []).append(callback)


def _start_build(folder: Path, spec: SyntheticSpec):
    """Build the demo in a worker, with an indeterminate progress bar in napari's activity dock."""
    if folder in _BUILDS:
        return _BUILDS[folder]
    from napari.utils import progress
    from napari.utils.notifications import show_error

    from napari_dynaclr._napari.widgets._jobs import start_job, thread_job

    bar = progress(total=0, desc="DynaCLR demo: writing the plate, building the checkpoint")
    worker = thread_job(build_demo)(folder, spec)

    def done(_paths):
        for callback in _WAITING.pop(folder, []):
            callback()

    def failed(exc):
        _WAITING.pop(folder, None)
        show_error(f"the DynaCLR demo could not be built in {folder}: {exc}")

    def finished():
        bar.close()
        _BUILDS.pop(folder, None)

    worker.returned.connect(done)
    worker.errored.connect(failed)
    worker.finished.connect(finished)
    _BUILDS[folder] = worker
    return start_job(worker)


def make_demo_sample(folder: Path | None = None):
    """npe2 sample-data command: layer data tuples of the demo's first FOV (images + tracks)."""
    folder = Path(folder or demo_folder())
    paths = demo_paths(folder)
    meta = {"dynaclr_demo": {k: str(v) for k, v in paths.items()}}
    if demo_complete(folder):
        return _layers_from_plate(paths, meta)
    _start_build(folder, DEMO_SPEC)
    return _layers_in_memory(DEMO_SPEC, meta)


def _layers_from_plate(paths: dict, meta: dict) -> list[tuple]:
    from napari_dynaclr._napari import layers
    from napari_dynaclr.core.plate import Plate
    from napari_dynaclr.core.tracks import find_tracks_csv, read_tracks

    with Plate(paths["plate"]) as plate:
        fov = plate.fovs[0]
        out = []
        for data, kwargs, kind in layers.fov_image_layers(fov, plate.channel_names):
            kwargs["metadata"] = {**kwargs["metadata"], **meta}
            out.append((data.compute(), kwargs, kind))
        tracks = read_tracks(find_tracks_csv(paths["tracks"], fov.name), fov.name)
        out.append(_tracks_layer(tracks, fov.name, layers.image_scale(fov), meta))
    return out


def _layers_in_memory(spec: SyntheticSpec, meta: dict) -> list[tuple]:
    """The first FOV exactly as the plate being written will hold it, computed here."""
    from napari_dynaclr._napari import layers
    from napari_dynaclr.core.synthetic import CHANNELS, TRACK_COLUMNS, synthetic_fovs

    name, tracks, img = next(synthetic_fovs(spec))
    scale = (1.0, 1.0, 1.0) if img.shape[2] == 1 else (1.0, 1.0, 1.0, 1.0)
    out = []
    for c, channel in enumerate(CHANNELS):
        kwargs = {"name": f"{name} {channel}", "scale": scale, "axis_labels": layers.axis_labels(len(scale)),
                  "colormap": layers.CHANNEL_COLORMAPS[c % len(layers.CHANNEL_COLORMAPS)],
                  "blending": "additive" if c else "translucent",
                  "metadata": {"dynaclr_fov": name, "dynaclr_channel": channel, **meta}}
        out.append((img[:, c, 0] if img.shape[2] == 1 else img[:, c], kwargs, "image"))
    out.append(_tracks_layer(tracks[TRACK_COLUMNS], name, scale, meta))
    return out


def _tracks_layer(tracks, fov_name: str, scale: tuple, meta: dict) -> tuple:
    from napari_dynaclr._napari import cellmodel, layers
    from napari_dynaclr.core.tracks import INDEX_COLUMNS

    df = tracks.copy()
    df.insert(0, "fov_name", fov_name)
    table = cellmodel.cell_table(df[[c for c in INDEX_COLUMNS if c in df.columns]])
    ov = layers.fov_overlay(table, fov_name, z=len(scale) == 4, scale=scale)
    return (ov.tracks, {"graph": ov.graph, "features": ov.features, "scale": ov.scale, "name": f"{fov_name} tracks",
                        "metadata": meta, "tail_length": 8, "axis_labels": layers.axis_labels(len(scale))}, "tracks")
