"""Every npe2 contribution reached the way a user reaches it: the docks through the Plugins menu's
``add_plugin_dock_widget``, the sample through File > Open Sample (``open_sample``), the reader through
File > Open (``viewer.open``, with and without choosing the plugin).

napari's builtin reader also claims every ``*.zarr`` folder, so File > Open of a ``.zarr`` shows napari's
reader chooser whatever we declare: what we guarantee is that our entry there reads both kinds of folder
this plugin is about (embedding stores and HCS plates)."""

from __future__ import annotations

import shutil

import pytest
import yaml

from napari_fixtures import demo_inputs, demo_store  # noqa: F401

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


@pytest.mark.parametrize("name", [w["display_name"] for w in _manifest()["contributions"]["widgets"]])
def test_every_dock_opens_from_the_plugins_menu(make_napari_viewer, name):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    assert dock.isVisible() or dock.isFloating() or widget is not None
    assert widget.viewer is not None


@pytest.mark.parametrize("plugin", [PLUGIN, None])
def test_opening_a_store_gives_the_embedding(make_napari_viewer, demo_store, plugin):  # noqa: F811
    viewer = make_napari_viewer()
    layers = _open(viewer, demo_store, plugin)
    assert [type(layer).__name__ for layer in layers] == ["Points"]
    assert "UMAP_0" in layers[0].features and len(layers[0].data) == 52
    assert layers[0].metadata["dynaclr_store"] == str(demo_store)


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


def test_open_sample_builds_the_demo_once(make_napari_viewer, demo_inputs, tmp_path, monkeypatch):  # noqa: F811
    """From an empty cache: the demo's checkpoint is built in the work process (napari's never imports
    torch); a second Open Sample reuses the files."""
    cache = tmp_path / "demo"
    monkeypatch.setenv("NAPARI_DYNACLR_CACHE", str(cache))
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "dynaclr_demo")
    assert sorted(type(layer).__name__ for layer in viewer.layers) == ["Image", "Image", "Tracks"]
    made = {p.name for p in cache.iterdir()}
    assert {"plate.zarr", "tracks", "model.ckpt", "predict.yml"} <= made
    stamp = (cache / "model.ckpt").stat().st_mtime_ns
    viewer.open_sample(PLUGIN, "dynaclr_demo")
    assert (cache / "model.ckpt").stat().st_mtime_ns == stamp and len(viewer.layers) == 6
    shutil.rmtree(cache)
