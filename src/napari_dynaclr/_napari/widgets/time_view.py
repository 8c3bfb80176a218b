"""The Time tab: when does each cell respond? VisCy's DTW pseudotime with the cells in view.

Onsets come from an annotation CSV (VisCy's layout), from a column of the cell table (an annotation made in the
dock, a classifier's ``predicted_*`` column, an obs column) or from the selected cells (a track's first selected
frame is its onset). :func:`napari_dynaclr.evaluate.pseudotime.run_pseudotime` then builds the template from the
annotated transitioning tracks, aligns every track to it and groups the responses, in the heavy work process with
progress and cancel. A *pseudotime.yaml* (the layout of ``evaluate pseudotime -c``) fills the form and gives the
settings the form does not show. The result's per-frame columns (VisCy's names: ``pseudotime``,
``alignment_region``, ``dtw_cost``, …, and each track's ``response_group``) become cell-table columns, the image
and the scatter are coloured by pseudotime, and the tracks are listed by onset with their response group; a
click on a track selects its cells and goes to its onset. *Save CSV* writes VisCy's per-frame table, *Save to
store* those columns into the store's obs (both through the safe write path).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, LineEdit, PushButton, SpinBox
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import QVBoxLayout, QWidget

from napari_dynaclr._napari import condition_jobs as cj
from napari_dynaclr._napari import workers
from napari_dynaclr._napari.session import get_session
from napari_dynaclr._napari.widgets._forms import field_path, form, keep_button_text, scrolling, while_alive
from napari_dynaclr._napari.widgets._jobs import thread_job
from napari_dynaclr._napari.widgets.long_job import LongJob
from napari_dynaclr._napari.widgets.pick_table import fill_rows, pick_table
from napari_dynaclr.errors import ConfigError, DynaclrError

if TYPE_CHECKING:
    import napari.viewer

SOURCES = ("annotation CSV", "cell table column", "selected cells")
MODES = {"subsequence": True, "global": False, "both": [True, False]}
#: the selected-cells source: its onset column and labels
SELECTED = ("selection_state", ("selected", "unselected"))
TRACK_HEADERS = ("fov", "track", "onset t", "annotated t", "response group", "DTW cost")
TABLE_NOT_ONSETS = ("fov_name", "selection", "cell_index", "frame", "alignment_region", "response_group")


def flavors_text(flavors: dict) -> str:
    """``raw: null, pca: 8`` — a flavour per template (null: no PCA, an integer: components, 0<x<1: variance)."""
    return ", ".join(f"{k}: {'null' if v is None else v}" for k, v in flavors.items())


def parse_flavors(text: str) -> dict:
    """The templates field (``raw: null, pca: 8``) as a mapping, read by the one YAML reader."""
    from napari_dynaclr.core.inputs import parse_yaml_text

    return parse_yaml_text("{" + text + "}", f"templates {text!r} (write name: null | components | variance, …)",
                           ConfigError)


class TimeView(QWidget):
    """DTW pseudotime of the session's tracks (see the module)."""

    def __init__(self, viewer: napari.viewer.Viewer, parent=None):
        super().__init__(parent)
        self.session = get_session(viewer)
        self.viewer = self.session.viewer
        self.base: dict = {}  # the loaded pseudotime.yaml (settings the form does not show)
        self.cfg = None  # the config of the last result
        self.result = None  # the last PseudotimeResult
        self.views: dict = {}  # (flavour, mode) -> (its cell-table columns, its track list)
        self.shown: tuple[str, str] | None = None  # (flavour, mode) in the table
        self.tracks: pd.DataFrame | None = None  # the listed tracks (condition_jobs.track_summary)
        self.columns: list[str] = []  # the cell-table columns of the shown mode
        self.config = FileEdit(label="pseudotime.yaml", mode="r", filter="*.yaml *.yml")
        self.load_btn = PushButton(text="Load settings")
        self.source = ComboBox(label="onsets from", choices=SOURCES, value=SOURCES[0])
        self.annotations = FileEdit(label="annotation CSV", mode="r", filter="*.csv")
        self.column = ComboBox(label="onset column", choices=[],
                               tooltip="the column whose value below marks a transitioned cell (its track's first "
                                       "such frame is the onset)")
        self.value = ComboBox(label="transitioned value", choices=[])
        self.dataset_id = LineEdit(label="dataset id", value="")
        self.interval = FloatSpinBox(label="frame interval (min)", value=30.0, min=1e-3, max=1e6, step=1.0)
        self.fov_pattern = LineEdit(label="template FOVs", value="",
                                    tooltip="FOV name parts whose annotated tracks build the template (comma "
                                            "separated; empty: all)")
        self.crop = SpinBox(label="crop window (frames)", value=0, min=0, max=10_000,
                            tooltip="template tracks cropped to onset ± this many frames (0: whole tracks)")
        self.flavors = LineEdit(label="templates", value="pca: 20",
                                tooltip="name: null (no PCA) | PCA components | explained variance, …")
        self.mode = ComboBox(label="alignment", choices=tuple(MODES), value="subsequence")
        self.show_result = ComboBox(label="show", choices=[])
        self.csv = FileEdit(label="CSV", mode="w", filter="*.csv")
        self.overwrite = CheckBox(text="overwrite", value=False)
        self.save_csv_btn = PushButton(text="Save CSV", enabled=False)
        self.save_store_btn = PushButton(text="Save to the store", enabled=False)
        keep_button_text(self.config, self.annotations, self.csv)
        self.job = LongJob(self, "Align tracks", self.run)
        self.track_table = pick_table(TRACK_HEADERS, self.goto_track, min_height=160)

        page = QWidget()
        lay = QVBoxLayout(page)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(form([("pseudotime.yaml", self.config), self.load_btn, ("onsets from", self.source),
                            ("annotation CSV", self.annotations), ("onset column", self.column),
                            ("transitioned value", self.value), ("dataset id", self.dataset_id),
                            ("frame interval (min)", self.interval), ("template FOVs", self.fov_pattern),
                            ("crop window (frames)", self.crop), ("templates", self.flavors),
                            ("alignment", self.mode)]))
        lay.addWidget(self.job)
        lay.addWidget(form([("show", self.show_result)]))
        lay.addWidget(self.track_table, stretch=1)
        lay.addWidget(form([("CSV", self.csv), self.overwrite, self.save_csv_btn, self.save_store_btn]))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(scrolling(page))

        self.load_btn.clicked.connect(lambda: self.load_config())
        self.source.changed.connect(lambda _: self._refresh_columns())
        self.annotations.changed.connect(lambda _: self._refresh_columns())
        self.column.changed.connect(lambda _: self._refresh_values())
        self.show_result.changed.connect(self._on_show)
        self.save_csv_btn.clicked.connect(lambda: self.save_csv())
        self.save_store_btn.clicked.connect(lambda: self.save_to_store())
        s = self.session
        s.table_changed.connect(self._on_table)
        if s.table is not None:
            self._on_table()

    # ------------------------------------------------------------------ form

    @while_alive
    def _on_table(self) -> None:
        self.job.cancel()  # (a result of the previous cells would not fit the new ones)
        self.result = self.shown = self.tracks = None
        self.views = {}
        self.columns = []
        fill_rows(self.track_table, [])
        self.show_result.choices = []
        self.save_csv_btn.enabled = self.save_store_btn.enabled = False
        t = self.session.table
        if t is None:
            return
        if not self.dataset_id.value:
            exp = t["experiment"].astype(str).iat[0] if "experiment" in t.columns and len(t) else None
            store = self.session.store_path
            self.dataset_id.value = exp or (Path(store).stem if store is not None else "dataset")
        self._refresh_columns()

    def _annotation_frame(self) -> pd.DataFrame | None:
        path = field_path(self.annotations.value)
        if path is None:
            return None
        from napari_dynaclr.evaluate.annotations import read_annotations

        return read_annotations(path)

    def _refresh_columns(self) -> None:
        source, t = self.source.value, self.session.table
        if source == SOURCES[0]:
            try:
                frame = self._annotation_frame()
            except DynaclrError as exc:
                self.job.fail(exc)
                frame = None
            cols = [] if frame is None else [c for c in frame.columns if c not in ("fov_name", "track_id", "t", "id",
                                                                                     "x", "y", "parent_track_id")]
        elif source == SOURCES[1] and t is not None:
            cols = [c for c in t.columns if c not in TABLE_NOT_ONSETS and (isinstance(t[c].dtype, pd.CategoricalDtype)
                                                                          or t[c].dtype == object)]
        else:
            cols = [SELECTED[0]]
        preferred = (self.base.get("align_tracks") or {}).get("infection_col", "infection_state")
        self.column.choices = cols
        if preferred in cols:
            self.column.value = preferred
        self._refresh_values()

    def _refresh_values(self) -> None:
        col, source = self.column.value, self.source.value
        values: list[str] = []
        if col is not None and source == SOURCES[2]:
            values = [SELECTED[1][0]]
        elif col is not None:
            frame = self._annotation_frame() if source == SOURCES[0] else self.session.table
            if frame is not None and col in frame.columns:
                values = sorted(str(v) for v in pd.unique(frame[col].dropna().astype(str)))
        self.value.choices = values
        preferred = (self.base.get("align_tracks") or {}).get("infected_value", "infected")
        if preferred in values:
            self.value.value = preferred

    def load_config(self, path=None) -> bool:
        """Fill the form from a pseudotime.yaml (the other settings of the file are kept for the run)."""
        from napari_dynaclr.evaluate.pseudotime import load_pseudotime_config

        path = field_path(path) or field_path(self.config.value)
        try:
            if path is None:
                raise ConfigError("choose a pseudotime.yaml first")
            cfg = load_pseudotime_config(path)
        except DynaclrError as exc:
            self.job.fail(exc)
            return False
        self.config.value = path
        self.base = cfg.model_dump()
        at, bt = cfg.align_tracks, cfg.build_template
        self.dataset_id.value = cfg.dataset_id
        self.interval.value = float(at.frame_interval_minutes)
        pattern = at.fov_pattern
        self.fov_pattern.value = ", ".join(pattern) if isinstance(pattern, list) else (pattern or "")
        self.crop.value = bt.crop_window or 0
        self.flavors.value = flavors_text(bt.flavors)
        modes = cfg.dtw_align_tracks.modes
        self.mode.value = "both" if len(modes) == 2 else ("subsequence" if modes[0] else "global")
        self._refresh_columns()
        self.job.status.value = f"loaded {Path(path).name}"
        return True

    def build_config(self):
        """The run's :class:`~napari_dynaclr.evaluate.pseudotime.PseudotimeConfig`: the loaded YAML with the form's
        values. Raises ConfigError naming the setting."""
        from napari_dynaclr.evaluate.pseudotime import PseudotimeConfig
        from napari_dynaclr.evaluate.yaml_config import validate_config

        if self.column.value is None or self.value.value is None:
            raise ConfigError("choose the onset column and its transitioned value ('onsets from')")
        raw = {k: dict(v) if isinstance(v, dict) else v for k, v in self.base.items()}
        patterns = [p.strip() for p in self.fov_pattern.value.split(",") if p.strip()]
        at = raw.setdefault("align_tracks", {})
        at.update(frame_interval_minutes=float(self.interval.value), source="annotation",
                  infection_col=self.column.value, infected_value=self.value.value,
                  fov_pattern=None if not patterns else patterns[0] if len(patterns) == 1 else patterns)
        bt = raw.setdefault("build_template", {})
        bt.update(crop_window=self.crop.value or None, flavors=parse_flavors(self.flavors.value))
        if not bt.get("propagate_columns"):
            bt["propagate_columns"] = [self.column.value]
        raw.setdefault("dtw_align_tracks", {})["subsequence"] = MODES[self.mode.value]
        raw["dataset_id"] = self.dataset_id.value
        return validate_config(PseudotimeConfig, raw, "Time")

    # ------------------------------------------------------------------ run

    def run(self):
        """Align every track in the work process. Returns the worker, or None (refused: one notification)."""
        s = self.session
        try:
            if s.adata is None or s.table is None:
                raise DynaclrError("no embeddings yet: run a prediction or open a store first")
            cfg = self.build_config()
            if self.source.value == SOURCES[0]:
                annotations = self._annotation_frame()
                if annotations is None:
                    raise ConfigError("choose an 'annotation CSV' (or take onsets from a cell table column)")
            elif self.source.value == SOURCES[1]:
                annotations = cj.annotations_from_column(s.table, cfg.align_tracks.infection_col)
            else:
                if not len(s.selected):
                    raise ConfigError("no cell is selected: select the transitioned cells of a few tracks")
                annotations = cj.annotations_from_column(s.table, SELECTED[0], s.selected, SELECTED[1])
        except DynaclrError as exc:
            self.job.fail(exc)
            return None
        table = s.table
        keys = table[cj.TRACK_KEY].copy()  # (the job maps its result onto the cells in its thread)
        return self.job.start(cj.pseudotime_job, (s.adata, s.adata.obs, annotations, cfg, keys), "pseudotime",
                              lambda out: self._show(*out, cfg) if s.table is table else None)

    def _show(self, result, views: dict, cfg) -> None:
        self.result, self.views, self.cfg = result, views, cfg
        for note in result.notes:
            show_warning(note)
        names = [f"{flavor} / {mode}" for flavor, fr in result.flavors.items() for mode in fr.modes]
        self.show_result.choices = names
        self.show_result.value = names[0]
        self._on_show(names[0])  # (also when the choice did not change)
        if self.session.store_path is not None and field_path(self.csv.value) is None:
            self.csv.value = Path(self.session.store_path).parent / f"{cfg.dataset_id}_pseudotime.csv"
        self.save_csv_btn.enabled = True
        self.save_store_btn.enabled = self.session.store_path is not None

    def mode_result(self):
        flavor, mode = self.shown
        return self.result.flavors[flavor].modes[mode]

    def _on_show(self, name) -> None:
        if self.result is None or not name:
            return
        flavor, mode = str(name).split(" / ")
        self.shown = (flavor, mode)
        res = self.mode_result()
        table = self.session.table
        columns, self.tracks = self.views[flavor, mode]
        columns = dict(columns)
        stale = [c for c in self.columns if c not in columns]
        for col in stale:  # (a previous mode's propagated labels)
            columns[col] = np.full(len(table), np.nan)
        self.session.add_columns(columns)
        self.columns = [c for c in columns if c not in stale]
        self.session.color_by("pseudotime")
        fill_rows(self.track_table, [track_cells(rec) for rec in self.tracks.to_dict(orient="records")])
        groups = res.response_groups["response_group"].value_counts().to_dict()
        self.job.status.value = (f"{flavor} / {mode}: {len(res.alignments)} tracks aligned to a "
                                 f"{len(self.result.flavors[flavor].template)}-frame template; "
                                 + ", ".join(f"{k} {v}" for k, v in sorted(groups.items()))
                                 + "; cells coloured by pseudotime")

    def goto_track(self, i: int) -> np.ndarray:
        """Select the cells of the *i*-th listed track and go to its onset frame; returns its rows."""
        rec = self.tracks.iloc[i]
        table = self.session.table
        rows = np.flatnonzero((table["fov_name"].astype(str).to_numpy() == rec["fov_name"])
                              & (table["track_id"].to_numpy() == rec["track_id"]))
        self.session.select(rows)
        self.session.goto_row(int(rec["row"]))
        return rows

    # ------------------------------------------------------------------ save

    def save_csv(self, path=None) -> Path | None:
        """VisCy's per-frame table of the shown mode as a CSV (safe write path). Returns the path or None."""
        path = field_path(path) or field_path(self.csv.value)
        try:
            if self.result is None:
                raise DynaclrError("align the tracks first")
            if path is None:
                raise DynaclrError("choose where to write the CSV ('CSV')")
            written = cj.save_pseudotime_csv(self.mode_result(), path, self.session.input_paths(),
                                             bool(self.overwrite.value))
        except DynaclrError as exc:
            self.job.fail(exc)
            return None
        show_info(f"wrote {written}")
        return written

    def save_to_store(self):
        """Write the shown mode's columns (VisCy's per-frame names, ``response_group``) into the store's obs,
        replacing the store atomically through the safe write path. Returns the worker, or None."""
        s = self.session
        if self.result is None or s.store_path is None:
            self.job.fail("align the tracks of an opened store first")
            return None
        adata, table, path, columns = s.adata, s.table.copy(), s.store_path, list(self.columns)
        worker = thread_job(workers.save_to_store)(adata, table, path, (), columns, s.input_paths(with_store=False))
        return self.job.jobs.start(worker, returned=lambda p: show_info(f"wrote {', '.join(columns[:3])}, … into {p}"),
                                   errored=self.job.fail)


def track_cells(rec: dict) -> list[str]:
    """One row of the track list."""
    def num(v):
        return "" if pd.isna(v) else str(int(v))

    return [rec["fov_name"], str(rec["track_id"]), num(rec["onset_t"]), num(rec["t_perturb"]),
            rec["response_group"], f"{rec['dtw_cost']:.4g}"]
