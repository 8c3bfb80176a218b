"""Every npe2 contribution reached the way a user reaches it: the docks through the Plugins menu's
``add_plugin_dock_widget``, the sample through File > Open Sample (``open_sample``), the reader through
File > Open (``viewer.open``, with and without choosing the plugin).

napari's builtin reader also claims every ``*.zarr`` folder, so File > Open of a ``.zarr`` shows napari's
reader chooser whatever we declare: what we guarantee is that our entry there reads both kinds of folder
this plugin is about (embedding stores and HCS plates)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from napari_fixtures import reader_dock, wait_worker

PLUGIN = "napari-dynaclr"


def _manifest() -> dict:
    from importlib.resources import files

    return yaml.safe_load(files("napari_dynaclr._napari").joinpath("napari.yaml").read_text())


def _open(viewer, path, plugin):
    """``viewer.open`` as File > Open does it (``plugin=None``; the API's default is napari's builtin
    reader): napari offers the readers that claim the path (its chooser); the user picks ours."""
    from napari.errors import MultipleReaderError

    if plugin is not None:
        return viewer.open(str(path), plugin=plugin)
    with pytest.raises(MultipleReaderError) as offered:
        viewer.open(str(path), plugin=None)
    assert PLUGIN in offered.value.available_plugins
    return viewer.open(str(path), plugin=PLUGIN)


WIDGETS = {w["display_name"]: w["command"] for w in _manifest()["contributions"]["widgets"]}
COMMANDS = {c["id"]: c["python_name"] for c in _manifest()["contributions"]["commands"]}


@pytest.mark.parametrize("name", list(WIDGETS))
def test_every_dock_opens_from_the_plugins_menu(make_napari_viewer, qtbot, name):
    """The Plugins menu's entry docks the manifest's widget class, shown, holding this viewer."""
    import importlib

    module, cls = COMMANDS[WIDGETS[name]].split(":")
    viewer = make_napari_viewer(show=True)
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    assert type(widget) is getattr(importlib.import_module(module), cls)
    assert dock.isAncestorOf(widget) and viewer.window.dock_widgets[dock.name] is widget
    qtbot.waitUntil(lambda: dock.isVisible() and widget.isVisible(), timeout=60_000)
    assert widget.viewer == viewer  # (napari may hand a plugin a proxy of it)


@pytest.mark.parametrize("plugin", [PLUGIN, None])
def test_opening_a_store_shows_its_cells_in_the_dock(make_napari_viewer, demo_inputs, demo_store, plugin,  # noqa: F811
                                                     qtbot, tmp_path):
    """File > Open of a store: the scatter in the DynaCLR dock's Explore tab (not Points in image space),
    and the plate the store names (relative to the store, as a predict.yml beside the plate writes it),
    with its cells overlaid."""
    folder = tmp_path / "demo"
    shutil.copytree(Path(demo_inputs["config"]).parent, folder)
    store = folder / "embeddings.zarr"
    shutil.copytree(demo_store, store)
    viewer = make_napari_viewer(show=True)
    assert _open(viewer, store, plugin) == []  # read in a worker: the layers come from the dock
    main = reader_dock(viewer, qtbot)  # the one the reader docked
    wait_worker(qtbot, main.opener.worker, 60_000)
    s = main.session
    assert s.store_path == store and len(s.table) == 52
    assert main.tabs.currentWidget() is main.explore and main.explore.axes() == ("UMAP_0", "UMAP_1")
    assert len(main.explore.scatter.xy) == 52
    names = [layer.name for layer in viewer.layers]
    assert names[:2] == ["A/1/0 Phase3D", "A/1/0 RFP"] and "A/1/0 cells" in names  # the plate from uns
    cells = viewer.layers["A/1/0 cells"]
    assert "UMAP_0" in cells.features and viewer.dims.axis_labels == ("t", "y", "x")
    assert main.status.value == "opened embeddings.zarr: 52 cells"


def test_a_store_read_without_a_window_is_points_in_embedding_space(demo_store):  # noqa: F811
    from napari_dynaclr._napari.reader import embedding_points

    [(data, kwargs, kind)] = embedding_points(demo_store)
    assert kind == "points" and data.shape == (52, 2) and "UMAP_0" in kwargs["features"]
    assert kwargs["metadata"]["dynaclr_store"] == str(demo_store)


@pytest.mark.parametrize("plugin", [PLUGIN, None])
def test_opening_a_plate_gives_its_first_fov_and_prefills_the_dock(make_napari_viewer, demo_inputs, plugin):  # noqa: F811
    viewer = make_napari_viewer()
    layers = _open(viewer, demo_inputs["plate"], plugin)
    assert [type(layer).__name__ for layer in layers] == ["Image", "Image"]
    assert [layer.name for layer in layers] == ["A/1/0 Phase3D", "A/1/0 RFP"]
    assert layers[0].data.shape == (4, 128, 128)
    _, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    assert str(main.plate.value) == str(demo_inputs["plate"])


def test_a_folder_that_is_neither_is_not_claimed(tmp_path):
    from napari_dynaclr._napari.reader import get_reader

    (tmp_path / "x.zarr").mkdir()
    (tmp_path / "x.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    assert get_reader(str(tmp_path / "x.zarr")) is None
    assert get_reader(str(tmp_path)) is None


def test_open_sample_builds_the_demo_once(make_napari_viewer, demo_inputs, tmp_path, monkeypatch, qtbot):  # noqa: F811
    """From an empty cache: the first FOV is shown at once, the demo's files are built in the work process
    (napari's never imports torch) with progress in the activity dock, and the dock fills its fields once
    they are there; a second Open Sample reuses the files."""
    from napari_dynaclr._napari.sample_data import demo_build

    cache = tmp_path / "demo"
    monkeypatch.setenv("NAPARI_DYNACLR_CACHE", str(cache))
    viewer = make_napari_viewer()
    _, main = viewer.window.add_plugin_dock_widget(PLUGIN, "DynaCLR")
    viewer.open_sample(PLUGIN, "dynaclr_demo")
    # napari got the first FOV at once; the checkpoint (torch, ~15 s) is still being built in the background
    assert sorted(type(layer).__name__ for layer in viewer.layers) == ["Image", "Image", "Tracks"]
    build = demo_build(cache)
    assert build is not None and not (cache / "model.ckpt").exists()
    assert main.status.value.startswith("waiting for the demo")
    wait_worker(qtbot, build, 120_000)
    assert Path(main.predict_yml.value) == cache / "predict.yml" and main.status.value == "loaded predict.yml"
    # the in-memory first FOV is the plate's
    from napari_dynaclr.core.plate import Plate

    with Plate(cache / "plate.zarr") as plate:
        np.testing.assert_array_equal(viewer.layers[1].data, plate.fovs[0].image[:, 1, 0])
    made = {p.name for p in cache.iterdir()}
    assert {"plate.zarr", "tracks", "model.ckpt", "predict.yml"} <= made
    stamp = (cache / "model.ckpt").stat().st_mtime_ns
    viewer.open_sample(PLUGIN, "dynaclr_demo")
    assert (cache / "model.ckpt").stat().st_mtime_ns == stamp and len(viewer.layers) == 6
    shutil.rmtree(cache)
