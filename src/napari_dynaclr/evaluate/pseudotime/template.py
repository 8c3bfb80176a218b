"""A DTW pseudotime template from onset-aligned tracks: VisCy's ``build_template`` (one dataset).

Steps (``dynaclr.pseudotime.dtw_alignment``, commit 4b62365):

1. Z-score with the mean and std (float64, ddof 0; std < 1e-10 → 1) of every row of the embedding passed.
2. PCA (scikit-learn, fitted on all z-scored rows): ``n_components = min(k, D, N)`` with ``random_state``, or
   ``PCA(variance_threshold, svd_solver="full")``; none when both are None.
3. Trajectories: the tracks of the aligned table (sorted order, rows by ``t``), cropped to
   ``t_perturb ± crop_window``; each PCA-transformed (per track) and L2-normalised per row.
4. DBA: the medoid (the first least sum of DTW distances to all others, over 50 candidates drawn with
   ``default_rng(random_state)`` when there are more) then up to ``dba_max_iter`` rounds of averaging the frames
   each DTW path maps to a template position, until the mean absolute change is below ``dba_tol``; the result is
   L2-normalised per row.
5. Labels: per column of ``propagate_columns``, the fraction of each observed class at each template position
   over the DTW paths of the tracks; time calibration: the mean ``t_relative_minutes`` per position, gaps
   interpolated.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from napari_dynaclr.errors import Cancelled, ConfigError
from napari_dynaclr.evaluate.pseudotime import dtw
from napari_dynaclr.evaluate.pseudotime.onsets import obs_tracks, select_tracks

MEDOID_CANDIDATES = 50


@dataclass
class Template:
    """VisCy's ``TemplateResult`` for one dataset."""

    template: np.ndarray
    pca: object | None
    zscore_mean: np.ndarray
    zscore_std: np.ndarray
    cell_ids: list[tuple[str, str, int]]
    explained_variance: float | None
    labels: dict[str, dict[str, np.ndarray]] | None
    time_calibration: np.ndarray | None
    template_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def n_input_tracks(self) -> int:
        return len(self.cell_ids)

    def __len__(self) -> int:
        return len(self.template)

    def preparer(self) -> Preparer:
        """Z-score, PCA and L2 per track, as VisCy prepares a query track."""
        return Preparer(self.zscore_mean, self.zscore_std, self.pca)


_ROWS = 8192  # rows per chunk of the column statistics


def _column_sum(X: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """``Σ_rows float64(x)`` (or ``Σ (x − center)²``) per column, adding one row after the other as numpy's
    ``sum(axis=0)`` of the whole float64 matrix does (its bits), without making that matrix."""
    buf = np.empty((min(len(X), _ROWS) + 1, X.shape[1]))  # row 0: the sum so far, then the rows to add
    acc = None
    for s in range(0, len(X), _ROWS):
        n = min(_ROWS, len(X) - s)
        rows = buf[1:n + 1]
        rows[...] = X[s:s + n]
        if center is not None:
            rows -= center
            rows *= rows
        if acc is None:
            acc = rows.sum(axis=0)
        else:
            buf[0] = acc
            acc = buf[:n + 1].sum(axis=0)
    return acc


def zscore_params(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """VisCy's per-dataset z-score: ``float64(X).mean(axis=0)`` and ``.std(axis=0)`` (std < 1e-10 → 1)."""
    mean = _column_sum(X) / len(X)
    std = np.sqrt(_column_sum(X, mean) / len(X))
    return mean, np.where(std < 1e-10, 1.0, std)


def _zscored(X: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    out = np.empty(X.shape, dtype=np.float64)
    for s in range(0, len(X), _ROWS):
        block = out[s:s + _ROWS]
        block[...] = X[s:s + _ROWS]
        block -= mean
        block /= std
    return out


def _prepare(Z: np.ndarray, pca) -> np.ndarray:
    """VisCy's ``_preprocess_embeddings``: ``pca.transform`` then scikit-learn's L2 ``normalize``."""
    from sklearn.preprocessing import normalize

    if pca is not None:
        Z = pca.transform(Z)
    return normalize(Z, norm="l2", axis=1)


class Preparer:
    """Z-score, PCA and L2 of one track at a time, with scikit-learn's arithmetic but without its per-call checks
    (1-2 ms, i.e. seconds for 10^4 tracks): ``Z @ components.T − mean @ components.T`` and
    ``Z / sqrt(einsum(Z, Z))`` as scikit-learn computes them. The first track is also prepared by scikit-learn
    itself; if the two differ in any bit (another scikit-learn), every track goes through scikit-learn."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, pca):
        self.mean, self.std, self.pca = mean, std, pca
        self.checked = False
        self.fast = True
        if pca is not None:
            self.components_t = pca.components_.T
            self.offset = pca.mean_.reshape(1, -1) @ self.components_t

    def _fast(self, Z: np.ndarray) -> np.ndarray:
        if self.pca is not None:
            Z = Z @ self.components_t
            Z -= self.offset
        else:
            Z = Z.copy()
        return _normalise(Z)

    def __call__(self, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The prepared rows of *X* (float32 or float64), written into *out* when it is given (without PCA, once
        the first track has been checked, in place: ``float64(X) − mean``, ``/ std``, ``/ norms``)."""
        if out is not None and self.checked and self.fast and self.pca is None:
            np.subtract(X, self.mean, out=out)
            out /= self.std
            return _normalise(out)
        Z = (np.asarray(X, dtype=np.float64) - self.mean) / self.std
        if not self.checked:
            self.checked = True
            result = _prepare(Z, self.pca)
            self.fast = np.array_equal(self._fast(Z), result)
        else:
            result = self._fast(Z) if self.fast else _prepare(Z, self.pca)
        if out is None:
            return result
        out[...] = result
        return out


def _normalise(Z: np.ndarray) -> np.ndarray:
    """scikit-learn's ``normalize(Z, norm="l2")`` in place: rows over ``sqrt(einsum(Z, Z))`` (tiny norms → 1)."""
    norms = np.sqrt(np.einsum("ij,ij->i", Z, Z))
    norms[norms < 10 * np.finfo(norms.dtype).eps] = 1.0
    Z /= norms[:, None]
    return Z


def _fit_pca(Z: np.ndarray, n_components: int | None, variance: float | None, random_state: int):
    if n_components is None and variance is None:
        return None, None
    from sklearn.decomposition import PCA

    # copy=False: the z-scored matrix is ours to overwrite (the same numbers, one copy of it less)
    if variance is not None:
        pca = PCA(n_components=variance, svd_solver="full", random_state=random_state, copy=False)
    else:
        pca = PCA(n_components=min(n_components, Z.shape[1], Z.shape[0]), random_state=random_state, copy=False)
    pca.fit(Z)
    return pca, float(np.sum(pca.explained_variance_ratio_))


def dba(sequences: Sequence[np.ndarray], max_iter: int = 30, tol: float = 1e-5, init: str = "medoid",
        random_state: int = 42, cancel: Callable[[], None] | None = None) -> np.ndarray:
    """VisCy's ``_dba``: DTW barycentre averaging from the medoid (or the first sequence)."""
    n = len(sequences)
    if init == "medoid":
        if n > MEDOID_CANDIDATES:
            candidates = np.random.default_rng(random_state).choice(n, MEDOID_CANDIDATES, replace=False)
        else:
            candidates = np.arange(n)
        avg = sequences[int(candidates[dtw.medoid(candidates, sequences)])].copy()
    else:
        avg = sequences[0].copy()
    stack = dtw.Stack.of(sequences)
    frames, offsets = stack.frames, stack.offsets
    for _ in range(max_iter):
        if cancel is not None:
            cancel()
        paths = dtw.warping_paths_batch(avg, stack)
        at = np.concatenate([p[:, 0] for p in paths])
        src = np.concatenate([p[:, 1] + o for p, o in zip(paths, offsets)])
        accum = np.zeros(avg.shape)
        counts = np.zeros(len(avg))
        np.add.at(accum, at, frames[src])  # in sequence then path order, as VisCy's loop adds them
        np.add.at(counts, at, 1)
        counts = np.maximum(counts, 1)
        new_avg = accum / counts[:, np.newaxis]
        change = np.mean(np.abs(new_avg - avg))
        avg = new_avg
        if change < tol:
            break
    return avg


def _labels_and_calibration(template: np.ndarray, trajectories: Sequence[np.ndarray], labels: list[dict] | None,
                            t_rel: list[np.ndarray], label_cols: list[str]):
    n_t = len(template)
    has_labels = bool(label_cols) and labels is not None
    has_t_rel = any(np.any(np.isfinite(t)) for t in t_rel)
    if not (has_labels or has_t_rel):
        return None, None
    paths = dtw.warping_paths_batch(template, trajectories)
    template_labels = None
    if has_labels:
        template_labels = {}
        for col in label_cols:
            vocab = sorted({str(v) for lab in labels for v in lab[col] if v is not None})
            counts = {c: np.zeros(n_t) for c in vocab}
            total = np.zeros(n_t)
            for lab, path in zip(labels, paths):
                values = lab[col][path[:, 1]]
                for cls in vocab:
                    hit = path[values == cls, 0]
                    np.add.at(counts[cls], hit, 1)
                    np.add.at(total, hit, 1)
            safe = np.where(total > 0, total, 1.0)
            template_labels[col] = {c: counts[c] / safe for c in vocab}
    calibration = None
    if has_t_rel:
        sums, n = np.zeros(n_t), np.zeros(n_t)
        at = np.concatenate([p[:, 0] for p in paths])
        vals = np.concatenate([t[p[:, 1]] for t, p in zip(t_rel, paths)])
        ok = np.isfinite(vals)
        np.add.at(sums, at[ok], vals[ok])  # in track then path order, as VisCy adds them
        np.add.at(n, at[ok], 1)
        if n.sum() > 0:
            raw = np.where(n > 0, sums / np.maximum(n, 1), np.nan)
            pos = np.arange(n_t)
            good = np.isfinite(raw)
            calibration = np.interp(pos, pos[good], raw[good]) if good.sum() >= 2 else np.full(n_t, raw[good][0])
    return template_labels, calibration


def build_template(X: np.ndarray, obs: pd.DataFrame, aligned: pd.DataFrame, dataset_id: str,
                   pca_n_components: int | None = 20, pca_variance_threshold: float | None = None,
                   dba_max_iter: int = 30, dba_tol: float = 1e-5, dba_init: str = "medoid",
                   crop_window: int | None = None, propagate_columns: Sequence[str] | None = None,
                   random_state: int = 42, cancel: Callable[[], bool] | None = None) -> Template:
    """VisCy's ``build_template({dataset_id: adata}, {dataset_id: aligned})`` (see the module). *X*: the
    embedding of every obs row (all of them set the z-score); *aligned*: :func:`~.onsets.align_tracks`' table.
    Raises :class:`ConfigError` when no track is left to build from."""

    def check() -> None:
        if cancel is not None and cancel():
            raise Cancelled("template building cancelled")

    mean, std = zscore_params(X)
    pca, explained = None, None
    if pca_n_components is not None or pca_variance_threshold is not None:
        pca, explained = _fit_pca(_zscored(X, mean, std), pca_n_components, pca_variance_threshold, random_state)
    check()
    tracks = select_tracks(obs_tracks(obs), aligned, 1, crop_window, obs["t"].to_numpy())
    if not len(tracks):
        raise ConfigError("no aligned track of the store is left to build the template from")
    label_cols = [c for c in (propagate_columns or []) if c in aligned.columns]
    lookups = {}
    key_cols = (aligned["fov_name"].astype(str), aligned["track_id"].astype(int), aligned["t"].astype(int))
    keys = list(zip(*key_cols))
    for col in label_cols:
        ok = aligned[col].notna().to_numpy() & (aligned[col] != "").to_numpy()
        lookups[col] = {k: str(v) for k, v, good in zip(keys, aligned[col].to_numpy(), ok) if good}
    t_rel_lookup = dict(zip(keys, aligned["t_relative_minutes"].astype(float))) \
        if "t_relative_minutes" in aligned.columns else {}
    t_obs = obs["t"].to_numpy()
    prepare = Preparer(mean, std, pca)
    trajectories, labels, t_rel, cell_ids = [], [], [], []
    for (fov, tid), rows in zip(tracks.keys, tracks.rows):
        trajectories.append(prepare(np.asarray(X[rows], dtype=np.float64)))
        times = t_obs[rows].astype(int)
        labels.append({c: np.array([lookups[c].get((fov, tid, int(t))) for t in times], dtype=object)
                       for c in label_cols})
        t_rel.append(np.array([t_rel_lookup.get((fov, tid, int(t)), np.nan) for t in times], dtype=float))
        cell_ids.append((dataset_id, fov, tid))
    check()
    trajectories = dtw.Stack.of(trajectories)  # one array for the DBA rounds and the labels' paths
    avg = dba(trajectories, dba_max_iter, dba_tol, dba_init, random_state,
              cancel=check if cancel is not None else None)
    from sklearn.preprocessing import normalize

    template = normalize(avg, norm="l2", axis=1)
    template_labels, calibration = _labels_and_calibration(template, trajectories, labels if label_cols else None,
                                                           t_rel, label_cols)
    return Template(template=template, pca=pca, zscore_mean=mean, zscore_std=std, cell_ids=cell_ids,
                    explained_variance=explained, labels=template_labels, time_calibration=calibration)
