"""The plugin's background jobs, Qt-free: the docks run them in napari thread workers.

Heavy work (the model, UMAP/PHATE, clustering) and quick answers (neighbours, a gallery, a classifier retrain,
smoothness, a store's first PCA) run in the plugin's two work processes (:mod:`napari_dynaclr.child`), its
*lanes*: each request goes to the lane :data:`LANES` names, so a click's answer never waits behind a
prediction or a UMAP. Each lane is started on its first request, serves one request at a time, and is killed
by a cancel of the request it serves (the other lane goes on). napari's process never imports torch, umap or
numba, and nothing here changes anything process-wide. Light work (planning a preview, reading a store,
opening a plate) runs in the worker thread itself.

Every job that talks to a work process is a generator: it yields ``None`` while it waits, so napari can
abort its worker at any time, and setting its *cancel* event kills the work process serving it.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import importlib
import inspect
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_dynaclr.errors import Cancelled, ConfigError, WorkerCrashed
from napari_dynaclr.predict.client import ChildProcess, Event, Warned

if TYPE_CHECKING:
    import pandas as pd  # (imported where used: the dock opens without it, workers.DATA_PACKAGES)

__all__ = ["LANES", "Batch", "Event", "Finished", "OpenedStore", "Warned", "cancel_job", "close_work_process",
           "cluster_job", "dock_packages_imported", "embedding_pca_job", "gallery_keys", "import_data_packages",
           "import_dock_packages", "in_thread", "inspect_checkpoint", "open_store", "open_store_job", "prediction_job",
           "preview_cells", "preview_job", "reduction_job", "request", "sample_job", "save_to_store", "shipped",
           "warm_job", "work_process"]

#: the lane (work process) of every request, here and nowhere else. "quick": the answer to a click, seconds at
#: most, never behind a long request; "heavy": a prediction, a reduction or clustering of the whole table, a
#: checkpoint check, the demo's inputs — minutes, one at a time.
LANES = {
    "predict": "heavy", "inspect": "heavy", "reduce": "heavy", "cluster": "heavy", "demo_inputs": "heavy",
    "neighbours": "quick", "gallery": "quick", "sample": "quick", "classify": "quick", "smoothness": "quick",
    "pca": "quick", "warm": "quick", "mmd": "heavy", "pseudotime": "heavy",
}

_LANES: dict[str, ChildProcess] = {}
_CHILD_LOCK = threading.Lock()


def work_process(lane: str = "heavy") -> ChildProcess:
    """The session's work process of *lane* (``"heavy"`` or ``"quick"``; started on its first request)."""
    if lane not in set(LANES.values()):
        raise ValueError(f"unknown lane {lane!r}")
    with _CHILD_LOCK:
        child = _LANES.get(lane)
        if child is None:
            child = _LANES[lane] = ChildProcess()
            atexit.register(child.close)
        return child


def request(kind: str, *args, cancel: threading.Event | None = None, **kwargs) -> Iterator:
    """Send the request *kind* to its lane's work process (:data:`LANES`): yields its events, warnings and
    ``None`` heartbeats, returns its result (:meth:`~napari_dynaclr.predict.client.ChildProcess.stream`)."""
    return work_process(LANES[kind]).stream(kind, *args, cancel=cancel, **kwargs)


#: the packages a thread job imports first, one thread at a time: pandas (with pyarrow, ≈ 0.4 s: the dock's pages
#: need it, and the dock imports it in a thread after its first paint, not on napari's GUI thread); zarr, which two
#: threads must not import for the first time at once (iohub and anndata import it); scipy.linalg, which napari
#: imports on the GUI thread when it makes its first layer (its affine transforms decompose with it: ≈ 80 ms, once)
#: unless a job did before
DATA_PACKAGES = ("pandas", "zarr", "scipy.linalg")
#: what a dock needs besides, imported after the data packages by the thread a dock starts after its first paint
#: (:func:`import_dock_packages`; a reader imports what it uses in its own job): matplotlib's figures for its pages
#: (≈ 0.3 s, and the full garbage collection its objects bring, ≈ 0.2 s: one block of napari's GUI thread imported
#: there); scipy.spatial, which napari imports on the GUI thread when the dock makes its first Tracks layer; and the
#: readers of plates and stores (iohub with xarray and dask, ≈ 0.25 s; anndata with h5py), which the first plate check
#: or run imported otherwise: the full garbage collection their objects bring (≈ 0.2 s) fell inside loading a
#: predict.yml, and now falls while the user reads the newly opened dock
DOCK_PACKAGES = ("matplotlib.figure", "scipy.spatial", "iohub.ngff", "anndata")
_IMPORTING = threading.Lock()
_DOCK_IMPORTED = threading.Event()


def import_data_packages() -> None:
    """Import :data:`DATA_PACKAGES` one thread at a time (≈ 0.7 s the first time, instant then).

    zarr's modules import each other: two threads importing it for the first time at once (a plate check
    and a store open started together) get a half-initialised module (``cannot import name 'StorePath'``,
    ``KeyError: 'zarr'``) or Python's import deadlock error. One that fails ends a dock's thread before
    :func:`import_dock_packages`: the dock makes its pages all the same (it fails again, by name, where used)."""
    try:
        with _IMPORTING:
            for name in DATA_PACKAGES:
                importlib.import_module(name)
    except BaseException:
        _DOCK_IMPORTED.set()
        raise


def import_dock_packages() -> None:
    """:data:`DOCK_PACKAGES`, as a thread job (:func:`in_thread` imported the data packages first): the thread a
    dock starts after its first paint."""
    try:
        with _IMPORTING:
            for name in DOCK_PACKAGES:
                importlib.import_module(name)
    finally:  # (a package that fails to import fails again, by name, where it is used)
        _DOCK_IMPORTED.set()


def dock_packages_imported() -> bool:
    """Whether a dock's thread has imported :data:`DATA_PACKAGES` and :data:`DOCK_PACKAGES` (or tried to): the
    dock makes its pages after it (on the GUI thread, an import of a module another thread imports waits)."""
    return _DOCK_IMPORTED.is_set()


def in_thread(job):
    """*job* as a dock runs it in a napari thread worker: the data packages imported first
    (:func:`import_data_packages`); and, for a generator job, a ``RuntimeError`` it raises reaches the dock as
    an error — superqt's generator worker takes one for "the worker's Qt object was deleted": it warns and ends
    without ``errored`` or ``finished``, and a dock waiting for the job would wait forever. It is raised as an
    ``Exception`` with the same message instead."""
    if inspect.isgeneratorfunction(job):
        @functools.wraps(job)
        def run_generator(*args, **kwargs):
            import_data_packages()
            try:
                return (yield from job(*args, **kwargs))
            except RuntimeError as exc:
                raise Exception(f"{type(exc).__name__}: {exc}") from exc

        return run_generator

    @functools.wraps(job)
    def run(*args, **kwargs):
        import_data_packages()
        return job(*args, **kwargs)

    return run


def cancel_job(cancel: threading.Event) -> None:
    """Cancel the job that was given *cancel*: when a work process serves it, kill that process now (the
    other lane goes on)."""
    cancel.set()
    with _CHILD_LOCK:
        children = list(_LANES.values())
    for child in children:
        child.cancel(cancel)


def close_work_process() -> None:
    """Kill the work processes and end every job waiting on them (napari is closing). A later job starts
    new ones."""
    with _CHILD_LOCK:
        children = list(_LANES.values())
        _LANES.clear()
        _SENT.clear()
    for child in children:
        atexit.unregister(child.close)
        child.close()


# ------------------------------------------------------------------ prediction


@dataclasses.dataclass
class Batch:
    """One predicted batch: rows [start, stop) with 2-D preview coordinates."""

    start: int
    stop: int
    index: int
    n_batches: int
    preview: np.ndarray


@dataclasses.dataclass
class Finished:
    adata: object
    output_path: Path | None
    seconds: float


def prediction_job(cfg, device: str | None = None, cancel: threading.Event | None = None) -> Iterator:
    """Predict *cfg* in the work process (the CLI's engine, on one device) and write its store there.

    Yields ``Planned``, one :class:`Batch` per batch (with a streaming 2-D preview), ``Stage`` events,
    :class:`Warned` and ``None`` heartbeats; returns :class:`Finished` with the AnnData rebuilt here from
    the streamed batches (the store's content). Setting *cancel* kills the work process; nothing is
    written then."""
    from napari_dynaclr.core.store import build_anndata

    if cfg.ckpt_path is None:
        raise ConfigError("no checkpoint: choose a checkpoint file")
    if cfg.output_path is None:
        raise ConfigError("no output path: choose where to write the embedding store")
    t0 = time.perf_counter()
    gen = request("predict", cfg, device, cancel=cancel)
    try:
        yield from _stream_events(gen, state := {})
    except (Cancelled, WorkerCrashed):
        from napari_dynaclr.core.output import clean_after_kill

        clean_after_kill(cfg.output_path)  # the killed process's lock file and partial store
        raise
    finally:
        gen.close()
    planned, acc, result = state["planned"], state["acc"], state["result"]
    summary = result["summary"]
    # the store's own uns (its inputs, and e.g. the rows a --allow-nonfinite run left NaN), its obs as written
    adata = build_anndata(planned.obs, acc.features, acc.projections, cfg.embedding_key, result["uns"],
                          layout=cfg.source.obs_layout)
    for key, value in result["obsm"].items():
        adata.obsm[key] = value
    return Finished(adata, summary.output_path, time.perf_counter() - t0)


def _stream_events(gen, state: dict) -> Iterator:
    """Pass the work process's run events on (batches with the 2-D preview it computed), accumulating the arrays in
    *state* (``planned``, ``acc``, ``result``)."""
    from napari_dynaclr.predict.events import BatchResult, EmbeddingAccumulator, Planned

    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            state["result"] = stop.value
            return
        if not isinstance(item, Event):
            yield item
            continue
        ev = item.value
        if isinstance(ev, Planned):
            state["planned"] = ev
            state["acc"] = EmbeddingAccumulator(len(ev.obs), ev.encoder.num_features, ev.encoder.projection_dim)
            yield ev
        elif isinstance(ev, BatchResult):
            state["acc"].add(ev)
            yield Batch(ev.start, ev.stop, ev.index, ev.n_batches, ev.preview)
        else:
            yield ev


def inspect_checkpoint(path, encoder=None, cancel: threading.Event | None = None) -> Iterator:
    """Load a checkpoint strictly in the work process and describe it (the config, inferred or given)."""
    return (yield from request("inspect", path, encoder, cancel=cancel))


def reduction_job(X, method: str, cancel: threading.Event | None = None, **kwargs) -> Iterator:
    """PCA/UMAP/PHATE of *X* (VisCy's parameters) in the work process: ``(obsm key, coordinates)``."""
    return (yield from request("reduce", shipped(X), method, kwargs, cancel=cancel))


def cluster_job(X, method: str, cancel: threading.Event | None = None, **kwargs) -> Iterator:
    """KMeans/HDBSCAN labels of *X* in the work process."""
    return (yield from request("cluster", shipped(X), method, kwargs, cancel=cancel))


def gallery_keys(table: pd.DataFrame) -> list[str]:
    """The columns of *table* that name a gallery's sample: ``fov_name, track_id, t`` and, where the table has
    it, ``experiment`` (a Bag-of-Channels store's samples of one cell, one per channel)."""
    return ["fov_name", "track_id", "t", *(["experiment"] if "experiment" in table.columns else [])]


def gallery_job(cfg, cells: pd.DataFrame, projection: str = "middle slice",
                cancel: threading.Event | None = None) -> Iterator:
    """The normalised patches of *cells* (:func:`gallery_keys` columns) as the model receives them (the quick
    lane cuts them with the run's plan and reader; a Bag-of-Channels run's samples too):
    ``(index, patches (N, C, Y, X))`` (:func:`napari_dynaclr.predict.gallery.model_inputs`)."""
    return (yield from request("gallery", cfg, cells, projection, cancel=cancel))


_SENT: dict = {}  # lane -> (pid, token): the matrix each lane's current work process holds


def shipped(X, dtype=np.float32):
    """*X* as a request carries it to a work process: an opened store's ``X`` as a reference to its store (the work
    process reads it: :class:`~napari_dynaclr.core.store.StoreMatrix`), anything else as an array of *dtype*
    (None: its own)."""
    from napari_dynaclr.core.store import StoreMatrix

    return X if isinstance(X, StoreMatrix) else np.asarray(X, dtype=dtype)


def _matrix_request(kind: str, token, X, *args, cancel: threading.Event | None = None) -> Iterator:
    """A request on the explorer's embedding matrix: sent once per work process and *token* (a new
    table), then named by its token. (A *token* of None: *X* is sent and used once, not kept.)"""
    lane = LANES[kind]
    child = work_process(lane)
    pid = child.pid
    held = token is not None and pid is not None and _SENT.get(lane) == (pid, token)
    result = yield from child.stream(kind, token, None if held else shipped(X), *args,
                                     cancel=cancel)
    if token is not None:
        _SENT[lane] = (child.pid, token)
    return result


#: what a warm quick lane has imported before its first request (the classifier's, the neighbours' and the
#: gallery's sampling libraries; no torch: only a gallery needs it, and it imports it then)
WARM_MODULES = ("napari_dynaclr.evaluate", "sklearn.linear_model", "sklearn.model_selection",
                "sklearn.preprocessing", "sklearn.metrics", "sklearn.decomposition", "sklearn.cluster")


def warm_job(token=None, X=None, cancel: threading.Event | None = None) -> Iterator:
    """Start the quick lane now and have it import :data:`WARM_MODULES` (and hold *X* as the matrix of
    *token*, when given), so that the first quick request after a store opens answers at once."""
    if token is None or X is None:
        return (yield from request("warm", None, None, WARM_MODULES, cancel=cancel))
    return (yield from _matrix_request("warm", token, X, WARM_MODULES, cancel=cancel))


def embedding_pca_job(X, token=None, n_components: int = 8, cancel: threading.Event | None = None) -> Iterator:
    """VisCy's PCA (StandardScaler, then PCA with random_state 42; 8 components, as its predict.yml asks, at
    most the matrix's rank) of a store without a reduction, in the quick lane: ``("X_pca", (N, k))`` for the
    scatter's first axes (NaN rows for NaN embeddings). With *token*, the quick lane keeps *X* as the
    explorer's matrix of that table."""
    return (yield from _matrix_request("pca", token, X, n_components, cancel=cancel))


def neighbours_job(token, X, metric: str, row: int, k: int, cancel: threading.Event | None = None) -> Iterator:
    """The *k* nearest cells of *row* (cosine or euclidean; exact up to 10⁵ cells, else approximate), built
    once per table and metric in the work process: ``(rows, distances)``."""
    return (yield from _matrix_request("neighbours", token, X, metric, row, k, cancel=cancel))


def sample_job(token, X, rows, n: int, cancel: threading.Event | None = None) -> Iterator:
    """At most *n* of the table's *rows* that cover them, nearest their centre first
    (:func:`~napari_dynaclr.evaluate.representative_sample`: a PCA and k-means, in the work process): the
    gallery's cells."""
    return (yield from _matrix_request("sample", token, X, np.asarray(rows, dtype=np.int64), int(n), cancel=cancel))


def classify_job(token, X, labels, groups, task: str, cancel: threading.Event | None = None) -> Iterator:
    """VisCy's linear classifier on the labelled rows, with a cell and a track split, and its prediction for
    every cell (the work process): a dict with ``predicted``, ``proba``, ``classes``, ``metrics`` and ``splits``
    per split, ``warning`` and ``notes`` (not the fitted model: it stays in the work process, with scikit-learn)."""
    return (yield from _matrix_request("classify", token, X, labels, groups, task, cancel=cancel))


def smoothness_job(token, X, obs: pd.DataFrame, metric: str, order: str, group_by: str | None = None,
                   cancel: threading.Event | None = None) -> Iterator:
    """VisCy's temporal smoothness statistics of the table (and per group), the two distance distributions
    and a per-row (per-track) score, in the work process."""
    return (yield from _matrix_request("smoothness", token, X, obs, metric, order, group_by, cancel=cancel))


# ------------------------------------------------------------------ light jobs (in the worker thread)


def preview_cells(cfg, keep_plate: bool = False):
    """The explorer's cell table of the cells a run with *cfg* would predict — the same plan as the run
    (plate, tracks, border filter, FOV selection), without a checkpoint or a model (nor torch).

    ``keep_plate=True`` returns ``(table, plate)``: the plan's open :class:`~napari_dynaclr.core.plate.Plate`
    (its FOVs are the selected ones), for a viewer to show without opening the plate again on its GUI
    thread (seconds for a 96-well plate); the caller closes it."""
    from napari_dynaclr._napari.cellmodel.table import cell_table
    from napari_dynaclr.predict.planners import plan_for

    plan = plan_for(cfg)
    try:
        table = cell_table(plan.index_frame())
    except BaseException:
        plan.close()
        raise
    if keep_plate:
        return table, plan.plate
    plan.close()
    return table


@dataclasses.dataclass
class OpenedStore:
    """An embedding store read for the explorer, with its plate opened (when found) off the GUI thread."""

    adata: object  # a napari_dynaclr.core.store.LazyStore (X and the AnnData read on demand)
    table: pd.DataFrame
    plate: object | None  # an open napari_dynaclr.core.plate.Plate, owned by the receiver
    tracks_path: Path | None
    plate_error: str | None  # why the plate could not be opened (the cells are shown without images)
    prepared: object = None  # a session.PreparedTable, for tables the GUI thread shows in steps
    inputs: object = None  # what the store records of its inputs, found or not (core.provenance.FoundInputs)

    def close(self) -> None:
        """Close the plate opened for this store (when it is not going to be shown)."""
        if self.plate is not None:
            self.plate.close()


def open_store(path, plate_path=None, tracks_path=None) -> OpenedStore:
    """Read an embedding store, build the explorer's cell table (no model needed) and open its plate:
    *plate_path*/*tracks_path*, else those the store records, found where they are now
    (:func:`napari_dynaclr.core.provenance.find_inputs`)."""
    from napari_dynaclr._napari.cellmodel.table import cell_table
    from napari_dynaclr.core.plate import Plate
    from napari_dynaclr.core.provenance import find_inputs
    from napari_dynaclr.core.store import LazyStore
    from napari_dynaclr.errors import DynaclrError

    adata = LazyStore(path)  # (X and the AnnData are read when a job needs them)
    table = cell_table(adata.obs, adata.obsm)
    found = find_inputs(path, adata.uns)
    plate_path, tracks_path = plate_path or found.plate, tracks_path or found.tracks.path
    plate, error = None, None
    if plate_path is not None:
        try:
            plate = Plate(plate_path)
        except DynaclrError as exc:
            error = str(exc)
    return OpenedStore(adata, table, plate, Path(tracks_path) if tracks_path else None, error, inputs=found)


def open_store_job(path, plate_path=None, tracks_path=None, prepare_above: int = 20_000,
                   color_column: str | None = None, colormap: str = "viridis",
                   shown: threading.Event | None = None) -> Iterator:
    """:func:`open_store`, and for a table of more than *prepare_above* cells also everything the GUI thread
    would build to show it (:func:`napari_dynaclr._napari.session.prepare_table`: the frame index, colours,
    the first FOV's overlay and napari layer objects; the first use of napari's Tracks layer also pays its
    imports here; napari's unit registry is read first, on the GUI thread, by
    :func:`~napari_dynaclr._napari.layers.napari_units`).

    A small table is returned at once (the GUI shows it in one go). A large one is yielded as the
    :class:`OpenedStore` (with ``prepared``; the GUI thread then shows it in steps, an event-loop turn apart);
    the job then yields ``None`` every 50 ms (so that napari can abort it) until the GUI thread sets *shown*
    (the store is shown, or the result was stale), and returns the same :class:`OpenedStore`: the job runs
    as long as the store is being opened."""
    opened = open_store(path, plate_path, tracks_path)
    if len(opened.table) <= prepare_above or shown is None:
        return opened
    from napari_dynaclr._napari.session import prepare_table

    try:
        opened.prepared = prepare_table(opened.table, opened.plate, None, color_column, colormap)
    except BaseException:
        opened.close()
        raise
    yield opened
    yield from _until(shown)
    return opened


def preview_job(cfg, color_column: str | None, colormap: str, shown: threading.Event) -> Iterator:
    """The cells a run with *cfg* will predict (:func:`preview_cells`), with what showing them needs but their
    layers (napari's first layers are made on the GUI thread: its unit registry is not thread-safe): yields
    ``(PreparedTable, open plate)``, then None every 50 ms (napari can abort it) until *shown* is set: the job
    runs until its cells are shown."""
    from napari_dynaclr._napari.layers import prepare_table

    table, plate = preview_cells(cfg, keep_plate=True)
    try:
        prepared = prepare_table(table, None, None, color_column, colormap, with_layers=False)
    except BaseException:
        plate.close()
        raise
    yield prepared, plate
    yield from _until(shown)


def _until(shown: threading.Event) -> Iterator[None]:
    """``None`` every 50 ms (napari can abort the job's worker meanwhile) until the GUI thread sets *shown*."""
    while not shown.wait(0.05):
        yield None


def save_to_store(adata, table: pd.DataFrame, path, reductions=(), columns=(), inputs=None) -> Path:
    """Copy reductions (obsm keys) and obs columns from the explorer into *adata* (an AnnData, or a
    :class:`~napari_dynaclr.core.store.LazyStore`, read now) and rewrite the store through the safe write path
    (replaced atomically; *inputs*: the session's plate and tracks)."""
    import pandas as pd

    from napari_dynaclr.core.store import as_anndata, write_store

    adata = as_anndata(adata)
    for key, coords in reductions:
        adata.obsm[key] = np.asarray(coords)
    for col in columns:
        vals = table[col]
        adata.obs[col] = pd.Categorical(vals.astype(str)) if isinstance(vals.dtype, pd.CategoricalDtype) \
            else vals.to_numpy()
    return write_store(adata, path, overwrite=True, inputs=inputs)
