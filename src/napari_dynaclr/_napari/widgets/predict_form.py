"""The Predict tab's form in the DynaCLR dock: its layout, filled from a VisCy predict.yml, and read into the
run's config. *dock* is the DynaCLR dock, whose fields these functions lay out, fill and read."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from pathlib import Path

from qtpy.QtWidgets import QScrollArea, QVBoxLayout, QWidget
from superqt import QCollapsible

from napari_dynaclr._napari.widgets._forms import field_path, form, scrolling, section
from napari_dynaclr.errors import DynaclrError

NORMALIZATIONS = ("from predict.yml", "fov_statistics", "dataset_statistics", "timepoint_statistics", "none")


def page(dock) -> tuple[QScrollArea, QCollapsible]:
    """Inputs, the advanced settings (collapsed), the output and opening a store: scrolls vertically
    only, and fits any dock width from 320 px. Returns the page and its advanced settings."""
    d = dock
    inputs = form([
        ("VisCy predict.yml", d.predict_yml), d.load_yml_btn,
        ("checkpoint", d.ckpt), d.ckpt_info,
        ("plate (HCS zarr)", d.plate), d.plate_info,
        ("FOVs to predict", d.fovs),
        ("tracks folder", d.tracks), ("tracks from", d.tracks_source.layer),
        ("FOV of the layer", d.tracks_source.fov), d.cells_info,
    ])
    advanced = QCollapsible("Advanced settings")
    advanced.addWidget(form([
        ("source channels", d.channels), ("z start", d.z_start), ("z stop (excl.)", d.z_stop),
        ("patch (initial YX)", d.patch), ("patch (final YX)", d.final_patch),
        ("batch size", d.batch_size), ("device", d.device), ("normalisation", d.normalization),
        d.umap, d.pca, d.allow_nonfinite,
    ]))
    output = form([("output store", d.output), d.overwrite])
    opened = QWidget()
    opened_lay = QVBoxLayout(opened)
    opened_lay.setContentsMargins(0, 0, 0, 0)
    opened_lay.addWidget(form([("embedding store", d.store), d.open_btn, ("show FOV", d.show_fov)]))
    # offered when the opened store's plate is not where the store records it
    d.store_plate_box = form([("plate of the store", d.store_plate), d.store_plate_info])
    d.store_plate_box.setVisible(False)
    opened_lay.addWidget(d.store_plate_box)
    page = QWidget()
    lay = QVBoxLayout(page)
    lay.setContentsMargins(2, 2, 2, 2)
    lay.addWidget(section("Inputs", inputs))
    lay.addWidget(advanced)
    lay.addWidget(section("Output", output))
    lay.addWidget(section("Open a store", opened))
    lay.addStretch(1)
    return scrolling(page), advanced


#: the pages after Predict and the modules they import (matplotlib's Qt canvas: matplotlib itself is imported by
#: the dock's thread, workers.DOCK_PACKAGES), imported one per event-loop turn after the dock opens
#: (:func:`later_imports`)
LATER_PAGES = (("Explore", "embedding_view", "EmbeddingView"), ("Cells", "cells_view", "CellsView"),
               ("Verify", "verify_panel", "VerifyWidget"), ("Conditions", "conditions_view", "ConditionsView"),
               ("Time", "time_view", "TimeView"))
PLOT_MODULES = ("matplotlib.backends.backend_qtagg",)


def later_pages(dock) -> list[tuple[str, Callable[[], QWidget]]]:
    """The dock's pages after Predict as (title, function that makes the page), made when first needed."""
    def maker(module: str, name: str):
        def make() -> QWidget:
            view = getattr(importlib.import_module(f"napari_dynaclr._napari.widgets.{module}"), name)
            return view(dock.viewer, config=dock.gallery_config) if name == "CellsView" else view(dock.viewer)
        return make

    return [(title, maker(module, name)) for title, module, name in LATER_PAGES]


def explore_then_plot(dock) -> Callable[[], bool]:
    """The condition the later steps wait for: the data and dock packages imported by the thread the dock started
    after its first paint (pandas, matplotlib: ≈ 0.7 s, not on napari's GUI thread), then the Explore page made
    (by this condition's next call), then its plot's staged first paint over (made in the turn after the page's)."""
    from napari_dynaclr._napari.workers import dock_packages_imported

    made = []

    def ready() -> bool:
        if not dock_packages_imported():
            return False
        if not made:
            made.append(dock.explore)
            return False
        return dock.explore.scatter.ready

    return ready


def later_imports() -> list[Callable[[], object]]:
    """The imports of the later pages, one function per module, after napari's units
    (:func:`~napari_dynaclr._napari.layers.napari_units`): each a short slice of the GUI thread."""
    names = [*PLOT_MODULES, *(f"napari_dynaclr._napari.widgets.{module}" for _, module, _ in LATER_PAGES)]
    from napari_dynaclr._napari.layers import napari_units

    return [napari_units, *(functools.partial(importlib.import_module, name) for name in names)]


def edits_plate_fields(cfg) -> bool:
    """Whether the plate fields (plate, tracks, channels, z, patches, normalisation) edit *cfg*'s data source
    (no predict.yml: they make one); a Bag-of-Channels cell index is not edited by them."""
    return cfg is None or bool(cfg.source.plate_fields)


def yml_selection(cfg, plate: Path | None) -> tuple[list[str] | None, list[str] | None]:
    """The ``fit_include_wells`` / ``fit_exclude_fovs`` of *cfg* (a loaded predict.yml) when it names *plate*."""
    if cfg is None or not edits_plate_fields(cfg) or plate is None or Path(cfg.source.data_path) != plate:
        return None, None
    return cfg.include_wells, cfg.exclude_fovs


# ---------------------------------------------------------------------- from a predict.yml


def fill_from_yml(dock, cfg) -> None:
    """Fill every field from *cfg*, a loaded predict.yml (its normalisations are kept as they are); reads the
    plate and checks the checkpoint at once."""
    d = dock
    src = cfg.source
    edits = edits_plate_fields(cfg)
    for w in (d.plate, d.fovs, d.tracks, d.tracks_source.layer, d.channels, d.z_start, d.z_stop, d.patch, d.final_patch,
              d.normalization):
        w.enabled = edits  # they edit a plate-and-tracks source only
    if not edits:
        d.plate_info.value = f"{src.describe()}; the plate, tracks and patch fields are not used"
        d.cells_info.value = ""
    else:
        d.normalization.choices = NORMALIZATIONS
        d.normalization.value = "from predict.yml"
        d.plate.value = src.data_path
        d.checks.read_plate_now()  # (selected as this predict.yml selects its FOVs)
        d.tracks.value = src.tracks_path
        d.channels.value = ", ".join(src.source_channel)
        d.z_stop.value = src.z_range[1]
        d.z_start.value = src.z_range[0]
        d.patch.value = src.initial_yx_patch_size[0]
        d.final_patch.value = src.patch_size[0]
    d.batch_size.value = cfg.batch_size
    d.device.value = cfg.accelerator if cfg.accelerator in d.device.choices else "auto"
    d.umap.value = cfg.umap_kwargs is not None
    d.pca.value = cfg.pca_kwargs is not None
    if cfg.output_path is not None:
        d.output.value = cfg.output_path
        d.overwrite.value = cfg.overwrite
    d.allow_nonfinite.value = cfg.allow_nonfinite
    if cfg.ckpt_path is not None:
        d.ckpt.value = cfg.ckpt_path
        d.checks.inspect_checkpoint_now()


# ---------------------------------------------------------------------- to the run's config


def read_config(dock, require_output: bool = True):
    """The run's config (:class:`~napari_dynaclr.core.config.PredictConfig`) from the fields, on top of a loaded
    predict.yml, always on one device: the same settings the command line's flags give, validated the same way.
    A source the plate fields do not edit (a Bag-of-Channels cell index) keeps the predict.yml's."""
    from napari_dynaclr.core.config import PredictConfig, default_normalizations

    d, base = dock, dock.yml_config
    run = _run_fields(d, require_output)
    if not edits_plate_fields(base):  # its samples come from its cell index / collection
        return base.with_overrides(**run)
    channels = [c.strip() for c in d.channels.value.split(",") if c.strip()]
    plate, tracks = field_path(d.plate.value), field_path(d.tracks.value)
    layer = d.tracks_source.active
    if plate is None or (tracks is None and not layer):
        raise DynaclrError("choose a plate and the tracks: a tracks folder, or a Tracks layer under 'tracks from'")
    tracks_table = include_wells = None
    if layer:  # the layer's FOV alone, once the plate's FOVs are known (the layer is checked against its image)
        if plate != d.checks.fovs_plate:
            raise DynaclrError(f"the plate {plate.name} is still being read (or could not be read): the Tracks "
                               "layer is checked against its FOVs")
        tracks, tracks_table = None, d.tracks_source.table(d.checks.fov_shapes)
        exclude = [f for f in d.fovs.choices if f != tracks_table.fov_names()[0]] or None
    elif plate == d.checks.fovs_plate:  # the FOV list shows this plate: it is the selection
        all_fovs, chosen = list(d.fovs.choices), list(d.fovs.value or [])
        if not chosen:
            raise DynaclrError("select at least one FOV to predict")
        include_wells, exclude = None, [f for f in all_fovs if f not in chosen] or None
    else:  # the plate is still being read: the predict.yml's selection (or every FOV)
        include_wells, exclude = yml_selection(base, plate)
    norm = d.normalization.value
    if norm == "from predict.yml" and base is not None:
        normalizations = base.source.normalizations
    elif norm in ("none", "from predict.yml"):
        normalizations = [] if norm == "none" else default_normalizations(channels)
    else:
        normalizations = default_normalizations(channels, norm)
    patch, final = d.patch.value, d.final_patch.value
    settings = {"data_path": plate, "tracks_path": tracks, "tracks_table": tracks_table, "source_channel": channels,
                "z_range": (d.z_start.value, d.z_stop.value), "initial_yx_patch_size": (patch, patch),
                "final_yx_patch_size": (final, final), "normalizations": normalizations, "exclude_fovs": exclude,
                "include_wells": include_wells, **run}
    if base is None:
        return PredictConfig.build({"kind": "tracks"}, **settings)
    return base.with_overrides(**settings)


def _run_fields(dock, require_output: bool) -> dict:
    """How to run, whatever the data: checkpoint, output, batch size, device (one), reductions."""
    from napari_dynaclr.core.reductions import DEFAULT_PCA_KWARGS, DEFAULT_UMAP_KWARGS

    d, base = dock, dock.yml_config
    output = field_path(d.output.value)
    if output is None and require_output:
        raise DynaclrError("choose an output store path")
    umap_kwargs = pca_kwargs = None
    if d.umap.value:
        umap_kwargs = base.umap_kwargs if base is not None and base.umap_kwargs else dict(DEFAULT_UMAP_KWARGS)
    if d.pca.value:
        pca_kwargs = base.pca_kwargs if base is not None and base.pca_kwargs else dict(DEFAULT_PCA_KWARGS)
    return {"batch_size": d.batch_size.value, "ckpt_path": field_path(d.ckpt.value), "output_path": output,
            "overwrite": d.overwrite.value, "allow_nonfinite": d.allow_nonfinite.value,
            "accelerator": d.device.value, "devices": 1, "num_nodes": 1, "strategy": "auto",
            "umap_kwargs": umap_kwargs, "pca_kwargs": pca_kwargs}
