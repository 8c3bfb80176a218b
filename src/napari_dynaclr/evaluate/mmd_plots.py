"""VisCy's ``compute-mmd`` figures (``save_plots: true``, its default), drawn from the result table of each mode.

Which figures, by VisCy's rules (``compute_mmd._save_plots*``, commit 4b62365), each as ``.pdf`` and ``.png``
(150 dpi) in ``output_dir``; ``{safe}`` is a label or marker with spaces → ``_`` and ``/`` → ``-``:

- per experiment (only with time bins): ``{experiment}_{safe label}_kinetics`` per comparison (MMD² per marker
  over the bin midpoints), ``{experiment}_multi_panel_kinetics`` (a panel per marker, a line per comparison),
  ``{experiment}_activity_heatmap`` (activity z-score, markers × bins, a panel per comparison) and, with two or
  more comparisons, ``{experiment}_paired_activity`` (the first two side by side, values written in the cells);
- ``--pooled``: ``pooled_{safe label}_heatmap`` per comparison (MMD², markers × bins, or one "aggregate"
  column), with time bins ``pooled_multi_panel_kinetics``, then ``pooled_activity_heatmap`` and
  ``pooled_paired_activity`` as above;
- ``--combined``: ``combined_heatmap`` (MMD² averaged over bins, markers × experiment pairs, a panel per
  condition) and, with ``temporal_bin_size`` (not ``temporal_bins``: VisCy's rule), ``combined_{safe
  marker}_kinetics`` (a line per condition and pair of experiments).

Stars mark the Benjamini–Hochberg significant cells or bins (``α = 0.05`` over the p-values of one line or of one
heatmap panel, NaN left out; a heatmap cell's p-value is the smallest of its rows), as VisCy's
``_bh_significance``. The heatmaps average (MMD², z-score) and take the minimum (p-value) over the rows of a cell,
as VisCy's pivot tables do. Differences that only make the figures readable: bins are columns by their edges (the
label prints them with ``:g``, VisCy's ``:.0f`` can merge two fractional bins), the multi-panel grid has at most 4
columns but no empty panels, and a store of several experiments gets a line per experiment and marker.

Drawn with matplotlib's object API (``Figure`` on an Agg canvas; never pyplot's global state: napari's process
may import this module); saved straight into the temporary file the safe write path hands out
(:func:`save_figure`), recorded in the folder's manifest, so that a rerun replaces its own figures, unchanged,
and nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from napari_dynaclr.core.output import check_output_path, record_file, temporary_writer, write_atomically
from napari_dynaclr.evaluate.mmd_config import MMDBase

#: the formats VisCy saves each figure in
FORMATS = ("pdf", "png")
DPI = 150
#: the false discovery rate of the significance stars
ALPHA = 0.05
#: how a user gets a figure file napari-dynaclr did not draw out of the way (figures replace only their own)
FIGURE_HINT = "move it away or choose another output_dir"
X_HOURS = "Hours post perturbation (bin midpoint)"


def safe_name(text: object) -> str:
    """VisCy's file-name form of a label or marker: spaces → ``_``, ``/`` → ``-``."""
    return str(text).replace(" ", "_").replace("/", "-")


def bh_significant(p_values: Iterable[float], alpha: float = ALPHA) -> np.ndarray:
    """Which p-values are significant after Benjamini–Hochberg at false discovery rate *alpha* (NaN: never, and
    left out of the count), as VisCy's ``_bh_significance`` (statsmodels ``multipletests(method="fdr_bh")``)."""
    from scipy.stats import false_discovery_control

    p = np.asarray(list(p_values) if not isinstance(p_values, np.ndarray) else p_values, dtype=float).ravel()
    significant = np.zeros(p.shape, dtype=bool)
    valid = ~np.isnan(p)
    if valid.any():
        significant[valid] = false_discovery_control(p[valid], method="bh") <= alpha
    return significant


# --- which figures ---------------------------------------------------------------------------------------------

def figure_plan(mode: str | None, prefix: str, labels: Iterable[str], markers: Iterable[str], bins: bool,
                zscores: bool) -> list[tuple[str, str, object]]:
    """The figures VisCy draws, as ``(file stem, kind, key)``: *mode* None (per experiment; *prefix* the
    experiment), ``"pooled"`` or ``"combined"``; *labels* the comparisons, *markers* the markers (combined only);
    *bins*: the rows have time bins (combined: ``temporal_bin_size``); *zscores*: some activity z-score is finite."""
    labels = list(dict.fromkeys(labels))
    pairs = [lbl for lbl in labels if lbl][:2]
    plan: list[tuple[str, str, object]] = []
    if mode == "combined":
        if bins:
            plan += [(f"combined_{safe_name(m)}_kinetics", "combined_kinetics", m) for m in dict.fromkeys(markers)]
        return plan + [("combined_heatmap", "combined_heatmap", None)]
    if mode == "pooled":
        plan += [(f"pooled_{safe_name(lbl)}_heatmap", "heatmap", lbl) for lbl in labels]
    elif bins:
        plan += [(f"{prefix}_{safe_name(lbl)}_kinetics", "kinetics", lbl) for lbl in labels]
    else:
        return []  # VisCy draws nothing per experiment without time bins
    if not bins:
        return plan  # (VisCy's activity heatmaps drop the rows without a bin: nothing left to draw)
    plan.append((f"{prefix}_multi_panel_kinetics", "multi_panel", None))
    if zscores:
        plan.append((f"{prefix}_activity_heatmap", "activity", None))
        if len(pairs) >= 2:
            plan.append((f"{prefix}_paired_activity", "paired", pairs))
    return plan


def _prefix(mode: str | None, experiment: str) -> str:
    return mode if mode is not None else experiment


def planned_files(mode: str | None, cfg: MMDBase, experiment: str = "unknown",
                  markers: Iterable[str] = ()) -> list[str]:
    """Every file name the run may draw, known before any computation (every comparison of *cfg*, z-scores
    assumed): what :func:`check_figures` checks. *markers*: the markers two experiments share (combined)."""
    bins = cfg.temporal_bin_size is not None if mode == "combined" else cfg.temporal
    labels = [c.label for c in getattr(cfg, "comparisons", None) or []]
    plan = figure_plan(mode, _prefix(mode, experiment), labels, markers, bins, zscores=True)
    return [f"{stem}.{fmt}" for stem, _, _ in plan for fmt in FORMATS]


def check_figures(names: Iterable[str], folder: Path, inputs: Mapping[str, object]) -> None:
    """Refuse, before any work, a figure name in *folder* that holds a file napari-dynaclr did not draw (or one
    changed since): one line naming it. A missing *folder* holds nothing to refuse."""
    if not Path(folder).is_dir():
        return
    for name in names:
        check_output_path(Path(folder) / name, False, inputs, overwrite_hint=FIGURE_HINT, kind="text")


# --- drawing ---------------------------------------------------------------------------------------------------

def _figure(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _colors(n: int) -> list:
    from matplotlib import colormaps

    tab10 = colormaps["tab10"].colors
    return [tab10[i % len(tab10)] for i in range(max(n, 1))]


def _text(value: object) -> str:
    """A label, marker or condition as plain text (a ``$`` would start matplotlib's math mode)."""
    return str(value).replace("$", r"\$")


def _despine(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)


def _with_bins(df: pd.DataFrame) -> pd.DataFrame:
    df = df.dropna(subset=["hours_bin_start", "hours_bin_end"]).copy()
    df["bin_mid"] = (df["hours_bin_start"] + df["hours_bin_end"]) / 2
    return df


def _bin_columns(df: pd.DataFrame) -> dict[float, str]:
    """Bin start → ``"0–3h"``, in time order."""
    first = df.drop_duplicates("hours_bin_start").sort_values("hours_bin_start")
    return {s: f"{s:g}–{e:g}h" for s, e in zip(first["hours_bin_start"], first["hours_bin_end"])}


def _pivot(df: pd.DataFrame, column: str, value: str, columns: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """markers × *column*: the mean of *value* and the smallest p-value of the rows of each cell."""
    markers = sorted(df["marker"].unique())
    grouped = df.groupby(["marker", column], sort=False)
    values = grouped[value].mean().unstack(column).reindex(index=markers, columns=columns)
    p = grouped["p_value"].min().unstack(column).reindex(index=markers, columns=columns)
    return values, p


def _heatmap(fig, ax, values: pd.DataFrame, p: pd.DataFrame, cmap: str, label: str, star: str = "white",
             norm=None, annotate: bool = False, colorbar: bool = True):
    """*values* as coloured cells (NaN grey), ticks named, a star on each BH-significant cell of *p*."""
    import matplotlib

    colors = matplotlib.colormaps[cmap].with_extremes(bad="lightgray")
    data = np.ma.masked_invalid(values.to_numpy(dtype=float))
    rows, cols = values.shape
    im = ax.pcolormesh(np.arange(cols + 1) - 0.5, np.arange(rows + 1) - 0.5, data, cmap=colors, norm=norm)
    ax.set_ylim(rows - 0.5, -0.5)  # (the first marker on top)
    ax.set_xticks(range(values.shape[1]), [_text(c) for c in values.columns], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(values.shape[0]), [_text(r) for r in values.index], fontsize=8)
    significant = bh_significant(p.to_numpy(dtype=float)).reshape(values.shape)
    for r, c in np.ndindex(values.shape):
        v = values.iat[r, c]
        if annotate and np.isfinite(v):
            text = (f"{int(v)}" if abs(v) >= 1 else f"{v:.1f}") + ("*" if significant[r, c] else "")
            ax.text(c, r, text, ha="center", va="center", fontsize=7, color="black")
        elif significant[r, c]:
            ax.text(c, r, "*", ha="center", va="center", color=star, fontsize=10, fontweight="bold")
    if colorbar:
        fig.colorbar(im, ax=ax, label=label)
    return im


def _symlog(values: np.ndarray, linthresh: float = 1.0):
    from matplotlib.colors import SymLogNorm

    finite = np.abs(values[np.isfinite(values)])
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else linthresh
    return SymLogNorm(linthresh=linthresh, vmin=-vmax, vmax=vmax)


def _line_key(df: pd.DataFrame) -> pd.Series:
    if "experiment" in df.columns and df["experiment"].nunique() > 1:
        return df["experiment"].astype(str) + "/" + df["marker"].astype(str)
    return df["marker"].astype(str)


def _kinetics(df: pd.DataFrame, keys: pd.Series, title: str, legend: str):
    """MMD² over the bin midpoints, a line per key, a star over each BH-significant bin of that line."""
    fig, axes = _figure((8, 4))
    ax = axes[0][0]
    names = sorted(keys.unique())
    for name, color in zip(names, _colors(len(names))):
        sub = df[(keys == name).to_numpy()].sort_values("bin_mid")
        ax.plot(sub["bin_mid"], sub["mmd2"], marker="o", label=_text(name), color=color)
        for row, s in zip(sub.itertuples(), bh_significant(sub["p_value"].to_numpy())):
            if s:
                ax.text(row.bin_mid, row.mmd2, "*", ha="center", va="bottom", color=color, fontsize=12)
    ax.set_xlabel(X_HOURS)
    ax.set_ylabel("MMD²")
    ax.set_title(_text(title))
    ax.legend(title=legend, bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=10, title_fontsize=11)
    ax.axhline(0, color="gray", linewidth=0.8, linestyle="--")
    _despine(ax)
    return fig


def draw_kinetics(df: pd.DataFrame, label: str):
    df = _with_bins(df[df["label"] == label])
    return None if df.empty else _kinetics(df, _line_key(df), label, "Marker")


def draw_combined_kinetics(df: pd.DataFrame, marker: str):
    df = _with_bins(df[df["marker"] == marker])
    if df.empty:
        return None
    keys = df["condition"].astype(str) + ": " + df["exp_a"].astype(str) + " vs " + df["exp_b"].astype(str)
    return _kinetics(df, keys, f"{marker}: cross-experiment MMD", "Condition: experiments")


def draw_multi_panel(df: pd.DataFrame):
    """A panel per marker (shared y range), a line per comparison, BH-significant bins as circled points."""
    df = _with_bins(df)
    if df.empty:
        return None
    markers = sorted(df["marker"].unique())
    labels = list(df["label"].unique())
    ncols = min(4, len(markers))
    nrows = math.ceil(len(markers) / ncols)
    vals = df["mmd2"].dropna()
    lo, hi = (float(vals.min()), float(vals.max())) if len(vals) else (0.0, 1.0)
    pad = (hi - lo) * 0.1 + 1e-6
    fig, axes = _figure((ncols * 3.5 + 2.0, nrows * 2.8), nrows, ncols)  # (+ the legend on the right)
    for i, marker in enumerate(markers):
        ax = axes[i // ncols][i % ncols]
        sub = df[df["marker"] == marker]
        for lbl, color in zip(labels, _colors(len(labels))):
            line = sub[sub["label"] == lbl].sort_values("bin_mid")
            if line.empty:
                continue
            ax.plot(line["bin_mid"], line["mmd2"], color=color, linewidth=1.2, label=_text(lbl), zorder=2)
            sig = line[bh_significant(line["p_value"].to_numpy())]
            ax.scatter(sig["bin_mid"], sig["mmd2"], color=color, edgecolors="black", linewidths=0.8, s=40, zorder=3)
        ax.set_title(_text(marker), fontsize=9)
        ax.set_ylim(lo - pad, hi + pad)
        ax.axhline(0, color="lightgray", linewidth=0.5, linestyle="--")
        _despine(ax)
    for i in range(len(markers), nrows * ncols):
        axes[i // ncols][i % ncols].set_visible(False)
    handles, names = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="outside right upper", fontsize=9, title="Comparison")
    fig.supxlabel(X_HOURS, fontsize=10)
    fig.supylabel("MMD²", fontsize=10)
    return fig


def _activity_panel(df: pd.DataFrame, label: str, columns: dict):
    """The activity z-scores and p-values of comparison *label*, markers × bins (columns named by *columns*), or
    None when it has no value."""
    z, p = _pivot(df[df["label"] == label], "hours_bin_start", "activity_zscore", list(columns))
    if z.isna().all().all():
        return None
    z.columns = p.columns = list(columns.values())
    return z, p


def draw_activity(df: pd.DataFrame):
    """Activity z-score, markers × bins, a panel per comparison (symmetric-log colours)."""
    df = df.dropna(subset=["hours_bin_start", "hours_bin_end", "activity_zscore"])
    if df.empty:
        return None
    columns = _bin_columns(df)
    labels = [lbl for lbl in df["label"].unique() if lbl]
    fig, axes = _figure((max(5.0, len(columns) * 1.0 * len(labels) + 1.5 * len(labels)),
                         max(4.0, df["marker"].nunique() * 0.6)), 1, len(labels))
    for ax, lbl in zip(axes[0], labels):
        if (zp := _activity_panel(df, lbl, columns)) is None:
            ax.set_visible(False)
            continue
        z, p = zp
        _heatmap(fig, ax, z, p, "RdBu_r", "Activity z-score", star="black", norm=_symlog(z.to_numpy()))
        ax.set_title(_text(lbl))
        ax.set_xlabel("Temporal bin")
        ax.set_ylabel("Marker")
    return fig


def draw_paired(df: pd.DataFrame, labels: list[str]):
    """The activity z-scores of two comparisons side by side, one colour scale, each value written in its cell."""
    df = df.dropna(subset=["hours_bin_start", "hours_bin_end", "activity_zscore"])
    both = df[df["label"].isin(labels)]
    if both.empty:
        return None
    columns = _bin_columns(df)
    norm = _symlog(both["activity_zscore"].to_numpy(dtype=float))
    fig, axes = _figure((max(10.0, len(columns) * 2.0), max(4.0, df["marker"].nunique() * 0.6)), 1, 2)
    shown = []
    for ax, lbl in zip(axes[0], labels):
        if (zp := _activity_panel(df, lbl, columns)) is None:
            ax.set_visible(False)
            continue
        z, p = zp
        im = _heatmap(fig, ax, z, p, "YlOrRd", "activity_zscore", norm=norm, annotate=True, colorbar=False)
        ax.set_title(_text(lbl))
        ax.set_xlabel("Temporal bin")
        shown.append(ax)
    axes[0][0].set_ylabel("Marker")
    fig.colorbar(im, ax=shown, label="activity_zscore")
    fig.suptitle(_text(" vs ".join(labels)))
    return fig


def draw_heatmap(df: pd.DataFrame, label: str):
    """MMD² of one comparison, markers × bins (or one "aggregate" column without bins)."""
    df = df[df["label"] == label]
    if df.empty or df["mmd2"].isna().all():
        return None
    if df["hours_bin_start"].isna().all():
        df = df.assign(column="aggregate")
        columns, xlabel = {"aggregate": "aggregate"}, ""
        figsize = (3.5, max(4.0, df["marker"].nunique() * 0.6))
    else:
        df = df.dropna(subset=["hours_bin_start"]).assign(column=lambda d: d["hours_bin_start"])
        columns, xlabel = _bin_columns(df), "Temporal bin"
        figsize = (max(6.0, len(columns) * 0.8), max(4.0, df["marker"].nunique() * 0.6))
    m, p = _pivot(df, "column", "mmd2", list(columns))
    m.columns = p.columns = list(columns.values())
    fig, axes = _figure(figsize)
    ax = axes[0][0]
    _heatmap(fig, ax, m, p, "viridis", "MMD²")
    ax.set_title(_text(f"MMD heatmap — {label}"))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Marker")
    return fig


def _short(name: object) -> str:
    return "_".join(str(name).split("_")[:3])


def draw_combined_heatmap(df: pd.DataFrame):
    """MMD² averaged over the bins, markers × pairs of experiments, a panel per condition."""
    if df.empty:
        return None
    df = df.assign(pair=df["exp_a"].map(_short) + "\nvs\n" + df["exp_b"].map(_short))
    conditions = sorted(df["condition"].unique())
    fig, axes = _figure((max(5.0 * len(conditions), 6.0), max(4.0, df["marker"].nunique() * 0.7)),
                        1, len(conditions))
    for ax, condition in zip(axes[0], conditions):
        sub = df[df["condition"] == condition]
        m, p = _pivot(sub, "pair", "mmd2", list(dict.fromkeys(sub["pair"])))
        if m.isna().all().all():
            ax.set_visible(False)
            continue
        _heatmap(fig, ax, m, p, "viridis", "MMD²")
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(_text(f"condition: {condition}"))
        ax.set_xlabel("Experiment pair")
        ax.set_ylabel("Marker")
    fig.suptitle("Cross-experiment MMD — all markers")
    return fig


_DRAW: dict[str, Callable] = {
    "kinetics": draw_kinetics, "combined_kinetics": draw_combined_kinetics, "heatmap": draw_heatmap,
    "multi_panel": lambda df, _: draw_multi_panel(df), "activity": lambda df, _: draw_activity(df),
    "paired": draw_paired, "combined_heatmap": lambda df, _: draw_combined_heatmap(df),
}


def draw_figures(mode: str | None, table: pd.DataFrame, cfg: MMDBase) -> dict[str, object]:
    """VisCy's figures of *table* (the result of *mode*) as ``{file stem: matplotlib Figure}``, only those VisCy
    writes (a figure with nothing to show is not drawn). Nothing is written here."""
    if table.empty:
        return {}
    if mode == "combined":
        bins = cfg.temporal_bin_size is not None and not table["hours_bin_start"].isna().all()
        plan = figure_plan(mode, "combined", [], table["marker"].unique(), bins, zscores=False)
    else:
        experiment = str(table["experiment"].iloc[0]) if mode is None else "pooled"
        bins = cfg.temporal and not table["hours_bin_start"].isna().all()
        plan = figure_plan(mode, _prefix(mode, experiment), table["label"].unique(), [], bins,
                           zscores=bool(table["activity_zscore"].notna().any()))
    figures = {}
    for stem, kind, key in plan:
        fig = _DRAW[kind](table, key)
        if fig is not None:
            figures[stem] = fig
    return figures


@temporary_writer
def save_figure(tmp: Path, fig, fmt: str) -> None:
    """Save *fig* as *fmt* into *tmp*, a temporary path of the safe write path (no creation date in a PDF: a
    rerun's figure is byte for byte the same)."""
    metadata = {"CreationDate": None} if fmt == "pdf" else None
    fig.savefig(tmp, format=fmt, dpi=DPI, bbox_inches="tight", metadata=metadata)


def write_figures(figures: Mapping[str, object], folder: Path, inputs: Mapping[str, object]) -> list[Path]:
    """Each figure as ``{folder}/{stem}.pdf`` and ``.png`` through the safe write path, recorded in the folder's
    manifest (replacing only this tool's own files, unchanged). Returns the paths written."""
    written = []
    for stem, fig in figures.items():
        for fmt in FORMATS:
            path = write_atomically(Path(folder) / f"{stem}.{fmt}", lambda tmp, f=fig, x=fmt: save_figure(tmp, f, x),
                                    False, inputs, kind="text", overwrite_hint=FIGURE_HINT)
            record_file(path)
            written.append(path)
    return written
