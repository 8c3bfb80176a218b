"""The work process of the napari plugin: ``python -m napari_dynaclr.child``.

napari's process never runs the model or a reduction: torch, numba (UMAP) and BLAS hold the GIL for
long stretches and would freeze the viewer. :class:`~napari_dynaclr.predict.client.ChildProcess` starts
this module as a separate Python process and sends it one request at a time over an authenticated
:mod:`multiprocessing.connection` socket. The child answers with a stream of messages:

- ``("event", obj)`` — a progress event of the request (:class:`~napari_dynaclr.predict.events.Planned`,
  :class:`~napari_dynaclr.predict.events.BatchResult` with the batch's arrays,
  :class:`~napari_dynaclr.predict.events.Stage`);
- ``("warning", message)`` — a warning raised while serving the request (a text, or a
  :class:`~napari_dynaclr.errors.DynaclrWarning` that the GUI words for its controls);
- ``("done", value)`` — the request's result, the last message;
- ``("error", wire, user error?)`` — the request failed, the last message: a
  :class:`~napari_dynaclr.errors.DynaclrError` as :meth:`~napari_dynaclr.errors.DynaclrError.to_wire` gives it
  (its type's code, message, key, remedy: it arrives with its type), anything else as its type's name and
  message's first line.

A prediction runs the same engine as the CLI (:func:`~napari_dynaclr.predict.run.prediction_events`) on one
device and writes the store itself (atomically); its result carries the run summary and the reductions,
so the GUI rebuilds the same AnnData from the streamed batches without reading the store back. The child
stays up between requests (numba compiles once a session); cancelling a request kills it.

Standard input carries the connection's address, key and napari's process id (one line, ``address
authkey-hex pid``) and then stays open: napari never writes to it again, and when napari's process dies (a
crash, ``kill -9``) the kernel closes its end. A watchdog thread (:func:`watch_parent`) notices that at once
and ends the child and its process group with SIGKILL, even in the middle of a long UMAP or batch, instead of
at the child's next message. A store being written is left beside the output path; the next run cleans it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import traceback
import warnings


def _serve_predict(send, cfg, device=None):
    from napari_dynaclr.predict.events import BatchResult
    from napari_dynaclr.predict.preview import StreamingProjector
    from napari_dynaclr.predict.run import prediction_events

    project = StreamingProjector()  # the dock's streaming preview, computed here (scikit-learn stays out of napari)
    # the GUI predicts on one device; several devices/nodes are a CLI feature (Lightning DDP would start
    # more processes that cannot report to the viewer)
    cfg = cfg.with_overrides(devices=1, num_nodes=1, strategy="auto")
    events = prediction_events(cfg, device, write=True)
    while True:
        try:
            ev = next(events)
        except StopIteration as stop:
            summary, adata = stop.value
            skip = {"X_projections", "X_backbone"}
            return {"summary": summary, "obsm": {k: v for k, v in adata.obsm.items() if k not in skip},
                    "uns": dict(adata.uns)}
        if isinstance(ev, BatchResult):
            ev = dataclasses.replace(ev, preview=project(ev.features))
        send(("event", ev))


def _serve_inspect(send, path, encoder=None):
    from napari_dynaclr.core.architecture import describe_config
    from napari_dynaclr.model.checkpoint import load_checkpoint

    loaded = load_checkpoint(path, encoder)
    how = "inferred from the weights" if loaded.inferred else "from predict.yml"
    return (f"{describe_config(loaded.config)}, {how}; all state-dict keys match "
            f"({loaded.n_parameters / 1e6:.1f} M parameters)")


def _serve_reduce(send, X, method, kwargs=None):
    from napari_dynaclr.core.reduce import compute_reduction

    return compute_reduction(_array(X), method, **dict(kwargs or {}))


def _serve_cluster(send, X, method, kwargs=None):
    from napari_dynaclr.core.reduce import compute_clusters

    return compute_clusters(_array(X), method, **dict(kwargs or {}))


def _array(X):
    """A request's matrix as a float32 array: sent as one, or a store's ``X`` that this process reads now
    (:class:`~napari_dynaclr.core.store.StoreMatrixRef`)."""
    import numpy as np

    return np.asarray(X, dtype=np.float32)


def _serve_demo_inputs(send, folder, spec=None, umap=True, **folder_options):
    from napari_dynaclr.demo import make_demo_inputs

    return make_demo_inputs(folder, spec, umap=umap, **folder_options)


def _serve_gallery(send, cfg, cells, projection="middle slice"):
    from napari_dynaclr.predict.gallery import model_inputs

    return model_inputs(cfg, cells, projection)


# the explorer's embedding matrix, sent once per session table (requests then name it by its token)
_MATRIX: dict = {"token": None, "X": None, "indexes": {}}


def _matrix(token, X):
    """The matrix of *token*: *X* when sent (kept for the next requests, unless *token* is None), else the one
    kept."""
    if X is not None:
        X = _array(X)
        if token is not None:
            _MATRIX.update(token=token, X=X, indexes={})
        return X
    if token is None or _MATRIX["token"] != token:
        raise LookupError(f"matrix {token} is not loaded")
    return _MATRIX["X"]


def _serve_neighbours(send, token, X, metric, row, k):
    from napari_dynaclr.evaluate import NeighbourIndex

    X = _matrix(token, X)
    index = _MATRIX["indexes"].get(metric)
    if index is None:
        index = _MATRIX["indexes"][metric] = NeighbourIndex(X, metric=metric)
    return index.query(int(row), int(k))


def _serve_sample(send, token, X, rows, n):
    from napari_dynaclr.evaluate import representative_sample

    return representative_sample(_matrix(token, X), rows, n=n)


def _serve_classify(send, token, X, labels, groups, task):
    import warnings as _warnings

    from napari_dynaclr.evaluate import compare_splits, predict_classes, train_classifier

    X = _matrix(token, X)
    with _warnings.catch_warnings():  # the lbfgs note is in the result's notes, not a warning per retrain
        _warnings.simplefilter("ignore", UserWarning)
        # VisCy's metrics (80/20, cell or track split), the cells per class and the accuracy over folds
        results = compare_splits(X, labels, groups, task=task, cross_validate=True)
        final = train_classifier(X, labels, split=None, task=task)  # every label counts for the prediction
    predicted, proba = predict_classes(final.model, X)
    warning = "; ".join(dict.fromkeys(f"{split} split: {r.warning}" for split, r in results.items() if r.warning))
    # (not the model: unpickling its scikit-learn objects would import scikit-learn into napari's process)
    return {"predicted": predicted, "proba": proba, "classes": list(final.classes),
            "metrics": {split: dict(r.metrics) for split, r in results.items()},
            "splits": {split: r.quality() for split, r in results.items()}, "warning": warning or None,
            "notes": sorted({n for r in [*results.values(), final] for n in r.notes})}


def _serve_warm(send, token, X, modules=()):
    import importlib

    for name in modules:
        importlib.import_module(name)
    if X is not None:
        _matrix(token, X)
    return None


def _serve_pca(send, token, X, n_components=8):
    from napari_dynaclr.core.reduce import compute_reduction

    X = _matrix(token, X)
    return compute_reduction(X, "PCA", n_components=max(1, min(int(n_components), *X.shape)))


def _serve_smoothness(send, token, X, obs, metric, order, group_by=None):
    from napari_dynaclr.evaluate import compute_smoothness, smoothness_by_group

    X = _matrix(token, X)
    result = compute_smoothness(X, obs, metric=metric, order=order)
    groups = {}
    if group_by:
        groups = {str(k): dict(v.stats) for k, v in smoothness_by_group(X, obs, group_by, metric=metric,
                                                                          order=order).items()}
    return {"stats": dict(result.stats), "adjacent": result.adjacent, "random": result.random,
            "per_row": result.per_row_score(), "groups": groups, "notes": list(result.notes)}


def _serve_mmd(send, obs, X, analysis):
    from napari_dynaclr.evaluate.mmd import run_mmd

    return run_mmd(obs, X, analysis, progress=lambda done, total, what: send(("event", (done, total, what))))


def _serve_pseudotime(send, X, obs, annotations, cfg):
    from napari_dynaclr.evaluate.matrix import embedding_matrix
    from napari_dynaclr.evaluate.pseudotime import run_pseudotime

    X = embedding_matrix(X, "X")  # (a store's X sent as a reference to it is read, and checked, here)
    return run_pseudotime(X, obs, annotations, cfg,
                          progress=lambda done, total, what: send(("event", (done, total, what))))


HANDLERS = {
    "mmd": _serve_mmd,
    "pseudotime": _serve_pseudotime,
    "gallery": _serve_gallery,
    "neighbours": _serve_neighbours,
    "sample": _serve_sample,
    "classify": _serve_classify,
    "smoothness": _serve_smoothness,
    "warm": _serve_warm,
    "pca": _serve_pca,
    "predict": _serve_predict,
    "inspect": _serve_inspect,
    "reduce": _serve_reduce,
    "cluster": _serve_cluster,
    "demo_inputs": _serve_demo_inputs,
}


def serve(conn) -> None:
    """Answer requests ``(kind, args, kwargs)`` on *conn* until it closes."""
    from napari_dynaclr.errors import DynaclrError, DynaclrWarning

    def send(msg):
        conn.send(msg)

    def show_warning(message, category, filename, lineno, file=None, line=None):
        if isinstance(message, DynaclrWarning):
            send(("warning", message))
        else:
            send(("warning", f"{category.__name__}: {message}" if category is not UserWarning else str(message)))

    while True:
        try:
            kind, args, kwargs = conn.recv()
        except (EOFError, OSError):
            return
        handler = HANDLERS.get(kind)
        try:
            if handler is None:
                raise ValueError(f"unknown request {kind!r}")
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning)
                warnings.showwarning = show_warning
                value = handler(send, *args, **kwargs)
            send(("done", value))
        except (EOFError, BrokenPipeError, ConnectionResetError):
            return
        except DynaclrError as exc:
            send(("error", exc.to_wire(), True))
        except BaseException as exc:  # a bug or a library failure: the message and the traceback's tail
            tb = traceback.format_exception(exc)
            print("".join(tb), file=sys.stderr, flush=True)
            first = str(exc).splitlines()[0][:300] if str(exc) else ""
            send(("error", {"code": type(exc).__name__, "message": first}, False))
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                return


def watch_parent(parent_pid: int, fd: int = 0, every: float = 0.5) -> threading.Thread:
    """Start a daemon thread that ends this process (:func:`end_now`) once the process *parent_pid* is gone:
    its end of the pipe on *fd* closes (EOF, noticed at once), or this process is re-parented (checked every
    *every* seconds: a process that napari forked may still hold the pipe open)."""

    def watch():
        try:
            if os.name == "posix":
                import select

                while os.getppid() == parent_pid:
                    ready, _, _ = select.select([fd], [], [], every)
                    if ready and not os.read(fd, 4096):
                        break  # EOF: napari's end closed
            else:  # no select() on pipes: EOF alone
                while os.read(fd, 4096):
                    pass
        except OSError:
            pass
        end_now()

    thread = threading.Thread(target=watch, name="dynaclr-parent-watchdog", daemon=True)
    thread.start()
    return thread


def end_now() -> None:
    """SIGKILL this process's group when it leads one (:class:`~napari_dynaclr.predict.client.ChildProcess`
    starts it in a session of its own: anything it started goes too), else this process alone."""
    if hasattr(os, "killpg") and os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(1)


def main() -> int:
    from multiprocessing.connection import Client

    line = sys.stdin.buffer.readline().split()
    if len(line) != 3 or not line[2].isdigit():
        print("napari_dynaclr.child: expected 'address authkey parent-pid' on standard input", file=sys.stderr)
        return 2
    address, key, parent = (x.decode() for x in line)
    watch_parent(int(parent), sys.stdin.fileno())
    with Client(address, authkey=bytes.fromhex(key)) as conn:
        serve(conn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
