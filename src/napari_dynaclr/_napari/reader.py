"""npe2 reader for the two kinds of ``.zarr`` folder this plugin works with.

- An **embedding store** (ours or VisCy's AnnData zarr) opens in the viewer's DynaCLR dock (docked if needed,
  shown if hidden, in the event-loop turn after ``viewer.open``; never a second one): its cells as a scatter in
  the Explore tab (UMAP when present, else PHATE, else PCA) and, when the store names its plate and tracks
  (``uns``), the first FOV's images with the cells overlaid as Tracks and Points layers carrying the cell table
  as ``features``. The store is read in a worker, so napari stays responsive while a large one loads; the
  reader itself adds no layer. Without a napari window (a headless viewer) it returns the cells as a Points
  layer in embedding coordinates instead.
- An **HCS OME-Zarr plate** opens as its first FOV, one lazy image layer per channel (nothing is read
  until a plane is shown), with the plate path in the metadata: the DynaCLR dock takes it as its plate.

Anything else is not claimed (the reader returns ``None``), so napari offers the other readers.
"""

from __future__ import annotations

from pathlib import Path

#: the reader docks the DynaCLR dock this long after ``viewer.open`` called it (napari is done by then)
DOCK_DELAY_MS = 50


def _one_path(path) -> Path | None:
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    return Path(str(path).rstrip("/"))


def get_reader(path):
    """:func:`read_embeddings` for an AnnData zarr store, :func:`read_plate` for an HCS plate, else None
    (cheap checks of the folder's metadata, no array reads)."""
    from napari_dynaclr.core.plate import is_hcs_plate
    from napari_dynaclr.core.store import is_embedding_store

    p = _one_path(path)
    if p is None:
        return None
    if is_embedding_store(p):
        return read_embeddings
    if is_hcs_plate(p):
        return read_plate
    return None


def read_embeddings(path):
    """Open the store in the DynaCLR dock of the current viewer (see the module); ``[(None,)]``: napari's
    "read, no layers" answer."""
    import napari

    path = _one_path(path)
    viewer = napari.current_viewer()
    window = getattr(viewer, "window", None)
    if window is None:
        return embedding_points(path)
    # docked (≈ 0.1 s) and opened in a later event-loop turn: viewer.open (napari's own work) is one turn,
    # making the dock another. Not at once: viewer.open processes events while it shows its progress (a due
    # timer would make the dock inside it). The timer belongs to the window's menu bar: closed, it never fires.
    from qtpy.QtCore import QTimer

    def dock_and_open() -> None:
        turn.deleteLater()
        # the viewer's DynaCLR dock if it has one (docked by the Plugins menu too: see napari.yaml), shown
        dock, main = window.add_plugin_dock_widget("napari-dynaclr", "DynaCLR")
        dock.show()
        dock.raise_()
        main.open_embeddings(path, use_fields=False)

    turn = QTimer(window.main_menu)
    turn.setSingleShot(True)
    turn.timeout.connect(dock_and_open)
    turn.start(DOCK_DELAY_MS)
    return [(None,)]


def embedding_points(path):
    """The store's cells as a Points layer in their 2-D embedding, the cell table as ``features``."""
    import numpy as np

    from napari_dynaclr._napari import cellmodel, workers
    from napari_dynaclr.core.store import LazyStore

    workers.import_data_packages()
    path = _one_path(path)
    store = LazyStore(path)  # (obs and obsm only: X is not needed here)
    table = cellmodel.cell_table(store.obs, store.obsm)
    x, y = cellmodel.default_axes(table)
    data = np.column_stack([table[y].to_numpy(dtype=float), table[x].to_numpy(dtype=float)])
    colors = cellmodel.column_colors(table["t"])
    kwargs = {
        "name": f"{path.name} ({x.split('_')[0]})",
        "features": table,
        "size": 0.02 * float(np.ptp(data[np.isfinite(data).all(axis=1)], axis=0).max() or 1.0),
        "face_color": colors,
        "border_width": 0,
        "metadata": {"dynaclr_store": str(path), "dynaclr_axes": [y, x]},
    }
    return [(data, kwargs, "points")]


def read_plate(path):
    """The plate's first FOV (in VisCy's order), one lazy image layer per channel."""
    from napari_dynaclr._napari import layers, workers
    from napari_dynaclr.core.plate import Plate

    workers.import_data_packages()  # (not while a dock's worker imports them: see there)
    path = _one_path(path)
    plate = Plate(path)  # stays open while napari shows its arrays
    fov = plate.fovs[0]
    out = []
    for data, kwargs, kind in layers.fov_image_layers(fov, plate.channel_names):
        kwargs["metadata"] = {**kwargs["metadata"], "dynaclr_plate": str(path)}
        out.append((data, kwargs, kind))
    return out
