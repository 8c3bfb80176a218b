"""The Explore dock's actions on the embeddings: reductions and clustering in the work process (and a first
PCA for a store that has no 2-D reduction), saving results to the store, annotations (a mixin of
:class:`napari_dynaclr._napari.widgets.embedding_view.EmbeddingView`)."""

from __future__ import annotations

import threading

import numpy as np
from napari.utils.notifications import show_error, show_info

from napari_dynaclr._napari import cellmodel
from napari_dynaclr._napari.widgets._jobs import thread_job
from napari_dynaclr.errors import Cancelled, DynaclrError


class EmbeddingActions:
    """What the Explore dock's buttons run; the view provides ``session``, ``jobs``, its controls and
    ``set_axes`` / ``color_by`` / ``_update_status``."""

    # ------------------------------------------------------------------ reductions / clustering

    def _start_first_pca(self):
        """A table with embeddings but no 2-D reduction (a store whose run asked for none): VisCy's PCA in
        the quick lane, then plotted; the scatter starts on an embedding, never on pixel positions."""
        from napari_dynaclr._napari.workers import embedding_pca_job

        s = self.session
        if s.adata is None or s.is_preview:
            return None
        table = s.table

        def done(result):
            key, coords = result
            if s.table is not table:  # another table since: stale
                return
            self._add_reduction(key, coords)

        def ended():
            if worker is self.pca_worker:
                self.pca_worker = None
                self._update_status()

        worker = thread_job(embedding_pca_job, progress={"desc": f"DynaCLR: PCA of {len(table)} cells"})(s.adata.X)
        self.pca_worker = worker
        self.jobs.start(worker, returned=done, errored=_show_job_error, finished=ended)
        return worker

    def _add_reduction(self, key: str, coords: np.ndarray) -> None:
        prefix = cellmodel.reduction_prefix(key)
        n = min(2 if key != "X_pca" else 8, coords.shape[1])
        self.session.add_columns({f"{prefix}_{j}": coords[:, j].astype(np.float32) for j in range(n)})
        self.awaiting_embedding = False
        self.set_axes(f"{prefix}_0", f"{prefix}_1")

    def _matrix(self):
        adata = self.session.adata
        if adata is None:
            raise cellmodel.ExploreError("no embeddings loaded: run a prediction or open a store first")
        if self.reduce_input.value == "projections" and "X_projections" in adata.obsm:
            return np.asarray(adata.obsm["X_projections"])
        return adata.X  # (an opened store's X is read by the job, in its thread)

    def _busy(self, busy: bool) -> None:
        for w in (self.reduce_btn, self.cluster_btn):
            w.enabled = not busy

    def _start(self, worker, on_done, cancel=None):
        self.worker = worker
        self._busy(True)
        self.jobs.start(worker, cancel, returned=on_done, errored=_show_job_error, finished=lambda: self._busy(False))
        return worker

    def _run_on_matrix(self, job, on_done, *args, **kwargs):
        """Start *job(X, *args, cancel=..., **kwargs)* on the embeddings in a worker (the work process), with
        a progress bar in napari's activity dock."""
        try:
            X = self._matrix()
        except cellmodel.ExploreError as exc:
            show_error(str(exc))
            return None
        cancel = threading.Event()
        desc = f"DynaCLR: {args[0]} of {len(X)} cells" if args else "DynaCLR"
        worker = thread_job(job, progress={"desc": desc})(X, *args, cancel=cancel, **kwargs)
        return self._start(worker, on_done, cancel)

    def compute_reduction(self, method: str | None = None):
        """Run PCA/UMAP/PHATE in a worker; the result becomes ``<METHOD>_0/1`` columns."""
        from napari_dynaclr._napari.workers import reduction_job

        def done(result):
            key, coords = result
            self._add_reduction(key, coords)
            if self.save_results.value:
                self.save_to_store(reductions=[(key, coords)])

        return self._run_on_matrix(reduction_job, done, method or self.reduction.value)

    def compute_clusters(self, method: str | None = None):
        """KMeans/HDBSCAN in a worker on the embeddings; the result is the categorical ``cluster`` column."""
        from napari_dynaclr._napari.workers import cluster_job

        def done(labels):
            self.session.add_columns({"cluster": labels})
            self.color_by("cluster")
            if self.save_results.value:
                self.save_to_store(columns=["cluster"])

        return self._run_on_matrix(cluster_job, done, method or self.clustering.value,
                                   n_clusters=self.n_clusters.value, min_cluster_size=self.min_size.value)

    def save_to_store(self, reductions=(), columns=()):
        s = self.session
        if s.adata is None or s.store_path is None:
            show_error("no embedding store to save to (open or write one first)")
            return None
        from napari_dynaclr._napari.workers import save_to_store

        worker = thread_job(save_to_store, progress=True)(
            s.adata, s.table, s.store_path, list(reductions), list(columns), s.input_paths(with_store=False))
        self.jobs.start(worker, returned=lambda p: show_info(f"saved to {p}"), errored=_show_job_error)
        self.worker = worker
        return worker

    # ------------------------------------------------------------------ annotations

    def assign_selection(self, name: str | None = None) -> int:
        name = name if isinstance(name, str) else self.class_name.value
        try:
            n = self.session.assign_selection(name)
        except cellmodel.ExploreError as exc:
            show_error(str(exc))
            return 0
        self.color_by("annotation")
        return n

    def export_csv(self, path=None) -> int:
        path = path if isinstance(path, (str,)) or hasattr(path, "suffix") else self.csv_path.value
        try:
            n = cellmodel.write_annotations_csv(self.session.table, path, inputs=self.session.input_paths())
        except (OSError, cellmodel.ExploreError) as exc:
            show_error(f"cannot export annotations: {exc}")
            return 0
        show_info(f"{n} annotated cells written to {path}")
        return n

    def import_csv(self, path=None) -> int:
        path = path if isinstance(path, (str,)) or hasattr(path, "suffix") else self.csv_path.value
        try:
            col, n = cellmodel.read_annotations_csv(self.session.table, path)
        except cellmodel.ExploreError as exc:
            show_error(str(exc))
            return 0
        self.session.add_columns({"annotation": col})
        self.color_by("annotation")
        show_info(f"{n} annotations matched cells")
        return n

    def save_annotations(self):
        return self.save_to_store(columns=["annotation"])


def _show_job_error(exc: BaseException) -> None:
    if isinstance(exc, Cancelled):
        return
    show_error(str(exc) if isinstance(exc, DynaclrError) else f"{type(exc).__name__}: {exc}")
