"""The Conditions tab: does a condition move the embedding, and from when? VisCy's MMD between conditions
(``dynaclr compute-mmd``: MMD² with permutation p-values per marker and time bin, its defaults), with the cells in
view.

Pick the grouping column (``perturbation``, the well, ``marker``, a cluster, an annotation… any categorical column
of the cell table), a reference condition (VisCy's ``cond_a``) and the conditions to compare with it (``cond_b``);
:func:`napari_dynaclr.evaluate.mmd.run_mmd` runs in the heavy work process with progress and cancel. The table
shows VisCy's rows; with time bins a plot draws MMD² over hours per comparison (filled: p < 0.05). Clicking a row
selects its cells (A and B of its marker and bin) in the scatter and on the plate. *Save CSV* writes VisCy's
``{experiment}_mmd_results.csv`` through the safe write path. Bad input (a missing ``marker`` or
``hours_post_perturbation`` column, fewer than ``min_cells`` cells…) is refused before any work, in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, PushButton, Select, SpinBox
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import QVBoxLayout, QWidget

from napari_dynaclr._napari import condition_jobs as cj
from napari_dynaclr._napari.session import get_session
from napari_dynaclr._napari.widgets._forms import field_path, form, keep_button_text, scrolling, while_alive
from napari_dynaclr._napari.widgets.long_job import LongJob
from napari_dynaclr._napari.widgets.pick_table import fill_rows, pick_table
from napari_dynaclr.errors import DynaclrError

if TYPE_CHECKING:
    import napari.viewer

#: the result table's columns: (header, VisCy's column, format)
SHOWN = (("comparison", "label", "{}"), ("marker", "marker", "{}"), ("hours", None, "{}"), ("n_a", "n_a", "{}"),
         ("n_b", "n_b", "{}"), ("MMD²", "mmd2", "{:.6g}"), ("p", "p_value", "{:.4g}"),
         ("z", "activity_zscore", "{:.3g}"))
NOT_GROUPS = ("selection", "cell_index", "frame")


def format_value(value, fmt: str) -> str:
    """How the table shows a number of the result (NaN → ``NaN``)."""
    if isinstance(value, float) and not np.isfinite(value):
        return "NaN"
    return fmt.format(value)


def hours_text(rec) -> str:
    start = rec["hours_bin_start"]
    return "all" if pd.isna(start) else f"[{start:g}, {rec['hours_bin_end']:g})"


class ConditionsView(QWidget):
    """MMD between conditions of the session's cells (see the module)."""

    def __init__(self, viewer: napari.viewer.Viewer, parent=None):
        super().__init__(parent)
        self.session = get_session(viewer)
        self.viewer = self.session.viewer
        self.result = None  # the last MMDResult
        self.analysis = None  # its MMDAnalysis
        self.obs: pd.DataFrame | None = None  # the obs it ran on (with a derived grouping column)
        self.loaded = None  # the MMDAnalysis of a loaded compute-mmd YAML (what the form does not show)
        self.config = FileEdit(label="compute-mmd YAML", mode="r", filter="*.yaml *.yml")
        self.load_btn = PushButton(text="Load settings")
        self.yaml_comparisons = CheckBox(text="the YAML's comparisons", value=False, enabled=False,
                                         tooltip="compare the YAML's pairs instead of the reference and the list")
        self.group_by = ComboBox(label="group by", choices=[cj.WELL], value=cj.WELL,
                                 tooltip="the column whose values are the conditions")
        self.reference = ComboBox(label="reference (cond_a)", choices=[])
        self.others = Select(label="compare with (cond_b)", choices=[])
        self.others.native.setMaximumHeight(96)  # (a list of a few conditions, not half the tab)
        self.embedding = ComboBox(label="embedding", choices=["X"], value="X",
                                  tooltip="X (the features) or an obsm key of the store")
        self.bin_hours = FloatSpinBox(label="time bin (h)", value=0.0, min=0.0, max=1e4, step=0.5,
                                      tooltip="VisCy's temporal_bin_size: bins of hours_post_perturbation (0 = none)")
        self.permutations = SpinBox(label="permutations", value=1000, min=1, max=1_000_000)
        self.max_cells = SpinBox(label="max cells", value=2000, min=1, max=10_000_000)
        self.min_cells = SpinBox(label="min cells", value=20, min=2, max=10_000_000)
        self.seed = SpinBox(label="seed", value=42, min=0, max=2**31 - 1)
        self.balance = CheckBox(text="balance samples", value=False)
        self.csv = FileEdit(label="CSV", mode="w", filter="*.csv",
                            tooltip="where Save CSV writes VisCy's CSV (default: beside the store)")
        self.overwrite = CheckBox(text="overwrite", value=False,
                                  tooltip="replace a CSV of that name that napari-dynaclr did not write")
        self.save_btn = PushButton(text="Save CSV", enabled=False)
        keep_button_text(self.csv, self.config)
        self.job = LongJob(self, "Compute MMD", self.run)
        self.table = pick_table([h for h, _, _ in SHOWN], self.select_comparison)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.2, 2.0), tight_layout=True)
        self.plot = FigureCanvasQTAgg(self.figure)
        self.plot.setMinimumHeight(170)
        self.plot.setVisible(False)

        page = QWidget()
        lay = QVBoxLayout(page)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(form([("compute-mmd YAML", self.config), self.load_btn, self.yaml_comparisons,
                            ("group by", self.group_by), ("reference (cond_a)", self.reference),
                            ("compare with (cond_b)", self.others), ("embedding", self.embedding),
                            ("time bin (h)", self.bin_hours), ("permutations", self.permutations),
                            ("max cells", self.max_cells), ("min cells", self.min_cells), ("seed", self.seed),
                            self.balance]))
        lay.addWidget(self.job)
        lay.addWidget(self.table, stretch=1)
        lay.addWidget(self.plot)
        lay.addWidget(form([("CSV", self.csv), self.overwrite, self.save_btn]))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(scrolling(page))

        self.load_btn.clicked.connect(lambda: self.load_config())
        self.group_by.changed.connect(lambda _: self._refresh_values())
        self.reference.changed.connect(lambda _: self._refresh_others())
        self.save_btn.clicked.connect(lambda: self.save_csv())
        s = self.session
        s.table_changed.connect(self._on_table)
        s.columns_changed.connect(self._on_columns)
        if s.table is not None:
            self._on_table()

    # ------------------------------------------------------------------ choices

    @while_alive
    def _on_table(self) -> None:
        self.job.cancel()  # (a result of the previous cells would not fit the new ones)
        self.result = self.analysis = self.obs = None
        fill_rows(self.table, [])
        self.plot.setVisible(False)
        self.save_btn.enabled = False
        adata = self.session.adata
        keys = ["X"] + [k for k in (adata.obsm.keys() if adata is not None else []) if k.startswith("X_")]
        self.embedding.choices = keys
        self._on_columns()
        if "perturbation" in self.group_by.choices:
            self.group_by.value = "perturbation"

    @while_alive
    def _on_columns(self) -> None:
        t = self.session.table
        if t is None:
            return
        groups = [c for c in t.columns if c not in NOT_GROUPS and (isinstance(t[c].dtype, pd.CategoricalDtype)
                                                                   or t[c].dtype == object)]
        if cj.WELL not in groups:
            groups.insert(1 if "fov_name" in groups else 0, cj.WELL)
        if list(self.group_by.choices) != groups:
            self.group_by.choices = groups
        self._refresh_values()

    def _refresh_values(self) -> None:
        t, col = self.session.table, self.group_by.value
        if t is None or col is None:
            return
        values = cj.grouping_choices(t, col)
        if list(self.reference.choices) != values:
            self.reference.choices = values
        self._refresh_others()

    def _refresh_others(self) -> None:
        ref = self.reference.value
        others = [v for v in self.reference.choices if v != ref]
        if list(self.others.choices) != others:
            self.others.choices = others
            self.others.value = others

    # ------------------------------------------------------------------ run

    def load_config(self, path=None) -> bool:
        """Fill the form from a VisCy compute-mmd YAML (its paths are not used: the dock's cells are compared);
        its comparisons are used while *the YAML's comparisons* is ticked, its ``obs_filter``, ``temporal_bins``
        and ``share_bandwidth_from`` always."""
        from napari_dynaclr.errors import ConfigError
        from napari_dynaclr.evaluate.mmd_config import MMDAnalysis, load_mmd_config

        path = field_path(path) or field_path(self.config.value)
        try:
            if path is None:
                raise ConfigError("choose a compute-mmd YAML first")
            cfg = load_mmd_config(path)
            if cfg.group_by not in self.group_by.choices:
                raise ConfigError(f"config {path}: group_by {cfg.group_by!r} is no column of the cells (columns: "
                                  f"{', '.join(self.group_by.choices)})")
        except DynaclrError as exc:
            self.job.fail(exc)
            return False
        self.config.value = path
        self.loaded = MMDAnalysis(**cfg.model_dump(exclude={"input_path", "output_dir"}))
        m = cfg.mmd
        self.group_by.value = cfg.group_by
        if cfg.embedding_key is not None and cfg.embedding_key not in self.embedding.choices:
            self.embedding.choices = [*self.embedding.choices, cfg.embedding_key]
        self.embedding.value = cfg.embedding_label
        self.bin_hours.value = float(cfg.temporal_bin_size or 0.0)
        self.permutations.value, self.min_cells.value, self.seed.value = m.n_permutations, m.min_cells, m.seed
        self.max_cells.value = m.max_cells or self.max_cells.max
        self.balance.value = m.balance_samples
        self.yaml_comparisons.enabled = True
        self.yaml_comparisons.value = True
        self.job.status.value = f"loaded {Path(path).name}: " + "; ".join(c.label for c in cfg.comparisons)
        return True

    def build_analysis(self):
        """The :class:`~napari_dynaclr.evaluate.mmd_config.MMDAnalysis` of the form (with a loaded YAML's other
        settings, else VisCy's defaults). Raises ConfigError naming the setting."""
        from napari_dynaclr.errors import ConfigError
        from napari_dynaclr.evaluate.mmd_config import parse_analysis

        raw = self.loaded.model_dump() if self.loaded is not None else {}
        if not (self.loaded is not None and self.yaml_comparisons.value):
            others = sorted(self.others.value or [])  # (the values are listed sorted)
            if self.reference.value is None or not others:
                raise ConfigError("choose a reference condition and at least one condition to compare with it")
            raw["comparisons"] = cj.comparisons(self.reference.value, others)
        raw["group_by"] = self.group_by.value
        raw["embedding_key"] = None if self.embedding.value == "X" else self.embedding.value
        raw["mmd"] = {**raw.get("mmd", {}), "n_permutations": int(self.permutations.value),
                      "max_cells": int(self.max_cells.value), "min_cells": int(self.min_cells.value),
                      "seed": int(self.seed.value), "balance_samples": bool(self.balance.value)}
        if raw.get("temporal_bins") is None:
            raw["temporal_bin_size"] = float(self.bin_hours.value) if self.bin_hours.value > 0 else None
        return parse_analysis(raw, "Conditions", with_paths=False)

    def _obs(self, group_by: str) -> pd.DataFrame:
        """The store's obs with the grouping column as the cell table holds it, as text: the table is the store's
        obs plus what the dock added or changed (the well, a cluster, an annotation made in the dock)."""
        s = self.session
        obs = s.adata.obs.copy()
        obs[group_by] = cj.grouping_values(s.table, group_by).to_numpy()
        return obs

    def run(self):
        """Check the form against the cells (every refusal before any work), then run MMD in the work process.
        Returns the worker, or None (refused: one notification)."""
        from napari_dynaclr.evaluate.mmd import plan_mmd

        s = self.session
        try:
            if s.adata is None or s.table is None:
                raise DynaclrError("no embeddings yet: run a prediction or open a store first")
            analysis = self.build_analysis()
            obs = self._obs(analysis.group_by)
            if analysis.embedding_key is not None and analysis.embedding_key not in s.adata.obsm:
                raise DynaclrError(f"the store has no obsm[{analysis.embedding_key!r}]")
            plan_mmd(obs, analysis)
        except DynaclrError as exc:
            self.job.fail(exc)
            return None
        X = s.adata.X if analysis.embedding_key is None else s.adata.obsm[analysis.embedding_key]
        table = s.table
        return self.job.start(cj.mmd_job, (obs, X, analysis), "MMD",
                              lambda result: self._show(result, analysis, obs) if s.table is table else None)

    def _show(self, result, analysis, obs) -> None:
        self.result, self.analysis, self.obs = result, analysis, obs
        recs = result.table.to_dict(orient="records")
        fill_rows(self.table, [[hours_text(rec) if col is None else format_value(rec[col], fmt)
                                for _, col, fmt in SHOWN] for rec in recs])
        self._plot(result.table, analysis)
        computed = len(recs) - result.n_nan
        self.job.status.value = (f"{computed} of {len(recs)} rows computed ({analysis.mmd.n_permutations} "
                                 "permutations); click a row to select its cells")
        for note in result.notes:
            show_warning(note)
        if self.session.store_path is not None and field_path(self.csv.value) is None:
            self.csv.value = Path(self.session.store_path).parent / result.csv_name
        self.save_btn.enabled = True

    def _plot(self, table: pd.DataFrame, analysis) -> None:
        self.figure.clf()
        if not analysis.temporal:
            self.plot.setVisible(False)
            return
        ax = self.figure.add_subplot(111)
        for (label, marker), rows in table.groupby(["label", "marker"], sort=False):
            mid = (rows["hours_bin_start"] + rows["hours_bin_end"]) / 2
            line, = ax.plot(mid, rows["mmd2"], "-", lw=1.2, label=f"{label} ({marker})")
            low = rows["p_value"] < 0.05
            ax.plot(mid[low], rows["mmd2"][low], "o", color=line.get_color(), ms=4)
            ax.plot(mid[~low], rows["mmd2"][~low], "o", mfc="none", color=line.get_color(), ms=4)
        ax.axhline(0.0, color="#888888", lw=0.6)
        ax.set_xlabel("hours post perturbation (bin centre)", fontsize=8)
        ax.set_ylabel("MMD²", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
        self.plot.setVisible(True)
        self.plot.draw_idle()

    # ------------------------------------------------------------------ link to the cells

    def select_comparison(self, row: int) -> np.ndarray:
        """Select the cells of result row *row* (A and B of its marker and time bin) in the scatter and on the
        plate; returns them."""
        cells = cj.mmd_rows(self.obs, self.analysis, row)
        self.session.select(cells)
        rec = self.result.table.iloc[row]
        self.job.status.value = (f"{rec['label']} at {hours_text(rec)} h: {len(cells)} cells selected "
                                 f"({rec['cond_a']} and {rec['cond_b']}, marker {rec['marker']})")
        return cells

    # ------------------------------------------------------------------ save

    def save_csv(self, path=None) -> Path | None:
        """Write VisCy's CSV of the result (safe write path, recorded in the folder's manifest: a later save
        replaces it while unchanged). Returns the path, or None (refused: one notification)."""
        path = field_path(path) or field_path(self.csv.value)
        try:
            if self.result is None:
                raise DynaclrError("compute MMD first")
            if path is None:
                raise DynaclrError("choose where to write the CSV ('CSV')")
            written = cj.save_mmd_csv(self.result, path, self.session.input_paths(), bool(self.overwrite.value))
        except DynaclrError as exc:
            self.job.fail(exc)
            return None
        show_info(f"wrote {written}")
        return written
