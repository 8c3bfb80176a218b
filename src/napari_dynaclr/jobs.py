"""Background jobs of the napari plugin, Qt-free (the widgets wrap them in napari thread workers).

:func:`prediction_job` is the streaming form of :func:`napari_dynaclr.engine.run_prediction`: the same
checkpoint loading, plan, :func:`~napari_dynaclr.engine.predict_batches` loop, AnnData layout,
reductions and atomic store write — but as a generator that yields progress events, so a GUI can show
cells as their batches arrive. Cancelling (the *cancel* event, or closing the generator) stops between
batches and writes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ConfigError

log = logging.getLogger(__name__)
_IMPORT_LOCK = threading.Lock()


def import_model_stack() -> None:
    """Import torch and the model code once, under a lock.

    Two worker threads importing torch at the same time (e.g. the checkpoint check and a run started
    right after) can crash the interpreter inside triton's extension import; serialise it.
    """
    with _IMPORT_LOCK:
        _guard_triton()
        from . import engine, model  # noqa: F401

        _LONG_LIVED.add("model stack")


_LOAD_LOCK = threading.Lock()
_LOADED: dict = {}


def load_model_cached(path, encoder=None, reuse: bool = True):
    """:func:`~napari_dynaclr.model.load_checkpoint`, one at a time, reusing the last loaded model.

    The checkpoint check and a run started right after it load the same file; two concurrent
    ``torch.load`` calls can deadlock, and loading twice wastes time on a laptop.
    """
    import_model_stack()
    from .model import load_checkpoint

    p = Path(path)
    try:
        st = p.stat()
        key = (str(p.resolve()), st.st_mtime_ns, st.st_size, repr(encoder))
    except OSError:
        key = None
    with _LOAD_LOCK:
        if not reuse:
            key = None
        if key is not None and _LOADED.get("key") == key:
            return _LOADED["model"]
        loaded = load_checkpoint(path, encoder)
        _LOADED.clear()
        if key is not None:
            _LOADED.update(key=key, model=loaded)
        return loaded


def _warm_up_gui_imports() -> None:
    """Do, in the worker, the one-off work napari first needs when our layers are built: imports
    (matplotlib via napari's colour handling, scipy.ndimage for the lasso raster) and pint's unit
    registry, which napari builds lazily on its first layer (≈ 0.7 s). Otherwise ≈ 1–1.5 s would block
    the GUI thread when the cells arrive. Pure Python, no Qt objects."""
    for name in ("matplotlib.colors", "matplotlib.path", "scipy.ndimage", "napari.components.histogram"):
        try:
            __import__(name)
        except Exception:  # optional: a missing module only costs the GUI thread later
            log.debug("warm-up import of %s failed", name, exc_info=True)
    try:
        import pint

        pint.get_application_registry().pixel  # noqa: B018 - builds the lazy registry
    except Exception:
        log.debug("warm-up of pint's registry failed", exc_info=True)
    _LONG_LIVED.add("napari layer code")


#: what has been loaded for good (module-level state that lives as long as the process)
_LONG_LIVED: set[str] = set()
_HEAP_FROZEN = False  # frozen at least once
_FROZEN_WITH: frozenset[str] = frozenset()  # what was loaded at the last freeze


def freeze_long_lived_heap() -> None:
    """Collect, then move every object alive now into the collector's permanent generation
    (``gc.freeze()``) — again only when more long-lived state was loaded since (the model stack,
    napari's layer code).

    torch, timm, napari and their dependencies keep ≈ 800 000 container objects (functions, types,
    module dicts) that live as long as the process. Every full collection walks them all — ≈ 0.5 s with
    the GIL held, a frozen viewer, every few batches of a run. Frozen, they are skipped; objects made
    later (tables, layers, embeddings) are collected as usual. This is the collector's documented use
    for long-lived start-up state. The first collection (≈ 0.5 s) happens while the user picks the
    inputs; a later one walks only what was loaded since (torch and timm: ≈ 0.17 s). The widget calls
    it when the preview's cells arrive, when the checkpoint has been checked and when a run starts, so
    the model stack is frozen whichever comes first. Call it on the GUI thread: the collection runs
    finalizers, and Qt objects must be destroyed there. ``NAPARI_DYNACLR_GC_FREEZE=0`` turns it off.
    """
    global _HEAP_FROZEN, _FROZEN_WITH
    loaded = frozenset(_LONG_LIVED)
    if (_HEAP_FROZEN and loaded <= _FROZEN_WITH) or os.environ.get("NAPARI_DYNACLR_GC_FREEZE", "1") == "0":
        return
    _HEAP_FROZEN, _FROZEN_WITH = True, loaded
    gc.collect()
    gc.freeze()


def preview_cells(cfg, keep_plate: bool = False):
    """The explorer's cell table of the cells a run with *cfg* would predict — the same plan as the run
    (plate, tracks, border filter, FOV selection), without a checkpoint or a model (nor torch).

    ``keep_plate=True`` returns ``(table, plate)``: the plan's open :class:`~napari_dynaclr.plate.Plate`
    (its FOVs are the selected ones), for a viewer to show without opening the plate again on its GUI
    thread (seconds for a 96-well plate); the caller closes it."""
    _warm_up_gui_imports()
    from .engine import plan_prediction
    from .explore import cell_table

    plan = plan_prediction(cfg)
    try:
        table = cell_table(plan.index_frame())
    except BaseException:
        plan.close()
        raise
    if keep_plate:
        return table, plan.plate
    plan.close()
    return table


def _guard_triton() -> None:
    """Keep torch from importing triton into a process whose OpenGL driver already loaded LLVM.

    Mesa's software renderer (llvmpipe, what napari uses under Xvfb) and radeonsi map the system
    libLLVM; triton's extension carries its own LLVM and segfaults while loading beside it (torchvision
    imports torch._dynamo, which probes for triton). Inference never needs triton (nothing is
    compiled), so in that situation triton is marked unavailable; torch then reports it as absent.
    """
    if "triton" in sys.modules:
        return
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return
    if "libLLVM" in maps:
        log.info("OpenGL driver loaded LLVM: disabling triton for this process")
        sys.modules["triton"] = None


_CHILD_LOCK = threading.Lock()
_CHILD_POOL = None


def _child_pool():
    """One spawned child process for UMAP/PHATE, kept for the session (numba compiles once)."""
    global _CHILD_POOL
    if _CHILD_POOL is None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        _CHILD_POOL = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        # at interpreter exit, concurrent.futures waits for the running task (a UMAP: minutes); kill the
        # child first. Its exit hooks run in reverse order of registration, so ours (later) goes first.
        register = getattr(threading, "_register_atexit", None)
        if register is not None:
            register(_stop_child_pool_at_exit)
    return _CHILD_POOL


@contextlib.contextmanager
def _main_script_hidden():
    """Keep a spawned child from re-running the parent's main script.

    multiprocessing's spawn imports the parent's ``__main__`` file in the child; a napari script without
    an ``if __name__ == "__main__":`` guard (most of them) would open a second viewer there and never
    compute anything. While the child starts, the script's path is hidden, so the child imports only
    what the task needs (``napari_dynaclr.reduce``). Modules run with ``-m`` and notebooks need nothing.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or getattr(getattr(main, "__spec__", None), "name", None):
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


_EXITING = False


def _stop_child_pool_at_exit() -> None:
    global _EXITING
    _EXITING = True
    stop_child_pool()


def stop_child_pool() -> None:
    """Kill the reduction child (a cancelled run; napari closing). The next reduction starts a new one."""
    global _CHILD_POOL
    pool, _CHILD_POOL = _CHILD_POOL, None
    if pool is None:
        return
    # SIGKILL, not SIGTERM: a process started with SIGTERM ignored (nohup-like launchers, some CI runners)
    # passes that on to the child, which would then outlive the cancel. Python < 3.14: no kill_workers().
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def run_in_child(fn, *args, cancel: threading.Event | None = None):
    """``fn(*args)`` in the reduction child process (one call at a time), for GIL-bound work that would
    freeze the viewer. Setting *cancel* kills the child and raises :class:`~napari_dynaclr.errors.Cancelled`."""
    from concurrent.futures import TimeoutError as FutureTimeout
    from concurrent.futures.process import BrokenProcessPool

    from .errors import Cancelled, DynaclrError

    with _CHILD_LOCK:
        with _main_script_hidden():  # the child process starts here, on the first submit
            future = _child_pool().submit(fn, *args)
        while True:
            try:
                return future.result(timeout=0.2)
            except FutureTimeout:
                if cancel is not None and cancel.is_set():
                    stop_child_pool()
                    raise Cancelled("prediction cancelled") from None
            except BrokenProcessPool as exc:
                stop_child_pool()
                if _EXITING:
                    raise Cancelled("the interpreter is exiting") from None
                raise DynaclrError(f"the reduction process died ({exc}); out of memory?") from None


def gui_reductions(cancel: threading.Event):
    """The napari job's ``reduce(adata, cfg)`` for :func:`~napari_dynaclr.engine.prediction_events`: the same
    reductions as the CLI, computed where they do not freeze the viewer.

    UMAP and PHATE run in a spawned child process (:func:`run_in_child`): numba holds the GIL while it
    compiles and runs their kernels (stalls of 0.1–0.2 s each on the GUI thread otherwise). PCA runs here
    with one BLAS thread (:func:`_one_blas_thread`). Setting *cancel* kills the child.
    """

    def reduce(adata, cfg) -> None:
        from .reduce import apply_reductions, child_reductions

        if cfg.umap_kwargs is not None or cfg.phate_kwargs is not None:
            obsm, messages = run_in_child(child_reductions, np.asarray(adata.X), cfg.umap_kwargs,
                                          cfg.phate_kwargs, cancel=cancel)
            for msg in messages:
                warnings.warn(msg, stacklevel=2)
            for key, value in obsm.items():
                adata.obsm[key] = value
        with _one_blas_thread():
            apply_reductions(adata, cfg.pca_kwargs, None, None)

    return reduce


def _one_blas_thread():
    """For PCA on a GUI's worker thread: LAPACK's QR holds the GIL, and a BLAS pool fighting the GUI for
    the cores stretches it past 100 ms; one thread keeps it short (a fraction of a second in all)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def compute_reduction(X, method: str) -> tuple[str, np.ndarray]:
    """:func:`napari_dynaclr.explore.compute_reduction` for the embedding view's worker: UMAP and PHATE in
    the reduction child process, PCA here with one BLAS thread (see :func:`gui_reductions`)."""
    from .explore import compute_reduction as reduction

    X = np.asarray(X, dtype=np.float32)
    if method.upper() in ("UMAP", "PHATE"):
        return run_in_child(reduction, X, method)
    with _one_blas_thread():
        return reduction(X, method)


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


def prediction_job(cfg, device: str | None = None, cancel: threading.Event | None = None,
                   write: bool = True, ui_ready: threading.Event | None = None) -> Iterator:
    """:func:`napari_dynaclr.engine.prediction_events` for the GUI: yields ``Planned``, one ``Batch``
    (with a streaming 2-D preview) per batch and ``Stage`` events; returns ``Finished``.

    With *ui_ready*, the model waits (at most 30 s) after ``Planned`` until the GUI has built its layers,
    so the GUI thread does not compete with the model for the CPU while it does."""
    import_model_stack()
    _warm_up_gui_imports()
    from .engine import BatchResult, Planned, prediction_events
    from .explore import StreamingProjector

    if cfg.ckpt_path is None:
        raise ConfigError("no checkpoint: choose a checkpoint file")
    if write and cfg.output_path is None:
        raise ConfigError("no output path: choose where to write the embedding store")
    # a reduced-precision run converts the model in place: never share that one
    loaded = load_model_cached(cfg.ckpt_path, cfg.encoder, reuse=cfg.precision in ("32-true", "32"))
    project = StreamingProjector()
    cancel = cancel or threading.Event()
    events = prediction_events(cfg, device, cancel, write, loaded=loaded, reduce=gui_reductions(cancel))
    try:
        while True:
            try:
                ev = next(events)
            except StopIteration as stop:
                summary, adata = stop.value
                return Finished(adata, summary.output_path, summary.seconds)
            if isinstance(ev, BatchResult):
                yield Batch(ev.start, ev.stop, ev.index, ev.n_batches, project(ev.features))
            else:
                yield ev
                if ui_ready is not None and isinstance(ev, Planned):
                    ui_ready.wait(timeout=30)
    finally:
        events.close()  # a cancelled or failed run stops the engine (and its readers) here


def __getattr__(name):
    """``jobs.Planned`` / ``jobs.Stage``: the engine's events, imported lazily (the engine imports torch)."""
    if name in ("Planned", "Stage"):
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclasses.dataclass
class OpenedStore:
    """An embedding store read for the explorer, with its plate opened (when found) off the GUI thread."""

    adata: object
    table: pd.DataFrame
    plate: object | None  # an open napari_dynaclr.plate.Plate, owned by the receiver
    tracks_path: Path | None
    plate_error: str | None  # why the plate could not be opened (the cells are shown without images)


def open_store(path, plate_path=None, tracks_path=None) -> OpenedStore:
    """Read an embedding store, build the explorer's cell table (no model needed) and open its plate:
    *plate_path*/*tracks_path*, else the folders recorded in the store (:func:`resolve_store_inputs`)."""
    from .errors import DynaclrError
    from .explore import cell_table
    from .plate import Plate
    from .store import read_store

    adata = read_store(path)
    table = cell_table(adata.obs, dict(adata.obsm))
    if plate_path is None or tracks_path is None:
        recorded_plate, recorded_tracks = resolve_store_inputs(adata, path)
        plate_path, tracks_path = plate_path or recorded_plate, tracks_path or recorded_tracks
    plate, error = None, None
    if plate_path is not None:
        try:
            plate = Plate(plate_path)
        except DynaclrError as exc:
            error = str(exc)
    return OpenedStore(adata, table, plate, Path(tracks_path) if tracks_path else None, error)


def resolve_store_inputs(adata, store_path) -> tuple[Path | None, Path | None]:
    """The plate and tracks folders recorded in a store's ``uns`` (relative to the store), if present."""
    out = []
    for key in ("data_path", "tracks_path"):
        val = adata.uns.get(key) if hasattr(adata, "uns") else None
        p = None
        if val:
            p = Path(str(val)).expanduser()
            if not p.is_absolute():
                for base in (Path(store_path).parent, Path.cwd()):
                    if (base / p).exists():
                        p = base / p
                        break
            if not p.exists():
                p = None
        out.append(p)
    return out[0], out[1]


def save_to_store(adata, table: pd.DataFrame, path, reductions=(), columns=()) -> Path:
    """Copy reductions (obsm keys) and obs columns from the explorer into *adata* and rewrite the store."""
    from .store import write_store

    for key, coords in reductions:
        adata.obsm[key] = np.asarray(coords)
    for col in columns:
        vals = table[col]
        adata.obs[col] = pd.Categorical(vals.astype(str)) if isinstance(vals.dtype, pd.CategoricalDtype) \
            else vals.to_numpy()
    return write_store(adata, path, overwrite=True)


def inspect_checkpoint(path, encoder=None) -> str:
    """Load a checkpoint strictly and describe it (the config, inferred or given, and key match)."""
    import_model_stack()
    from .architecture import describe_config

    loaded = load_model_cached(path, encoder)
    how = "inferred from the weights" if loaded.inferred else "from predict.yml"
    return (f"{describe_config(loaded.config)}, {how}; all state-dict keys match "
            f"({loaded.n_parameters / 1e6:.1f} M parameters)")
