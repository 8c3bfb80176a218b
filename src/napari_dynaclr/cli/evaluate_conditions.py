"""``napari-dynaclr evaluate mmd | pseudotime``: VisCy's MMD between conditions and its DTW pseudotime.

Everything is checked (config, store columns, output paths) before any distance is computed; bad input exits 2
with one line and writes nothing. Every file goes through the safe write path (:mod:`napari_dynaclr.core.output`,
here :func:`write_outputs`, the figures' :func:`~napari_dynaclr.evaluate.mmd_plots.write_figures` and the reports'
:func:`~napari_dynaclr.cli.reports.write_report`) and is recorded in its folder's manifest
(:mod:`napari_dynaclr.core.output.manifest`): a rerun of a config replaces its own unchanged CSV, JSON and figures
(VisCy overwrites silently), a CSV or JSON of that name the tool did not write, or changed since, only with
``--overwrite``, such a figure never.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

from napari_dynaclr.cli.progress import progress_bar
from napari_dynaclr.cli.reports import OVERWRITE_RECORDED_HELP, check_report, write_report
from napari_dynaclr.errors import ConfigError


def add_parsers(esub) -> None:
    m = esub.add_parser(
        "mmd",
        help="MMD between conditions per marker and time bin (VisCy's compute-mmd, same CSV and numbers)",
        description="Read a VisCy compute-mmd YAML unchanged (input_path, output_dir, comparisons, group_by, "
        "obs_filter, embedding_key, temporal_bin_size | temporal_bins, mmd: n_permutations, max_cells, min_cells, "
        "seed, balance_samples, share_bandwidth_from); relative paths are relative to the working directory, as "
        "in VisCy. Writes {output_dir}/{experiment}_mmd_results.csv with VisCy's columns and, with save_plots "
        "(VisCy's default), VisCy's figures as PDF and PNG (docs/conditions_and_time.md). The store's obs needs "
        "the group_by column and 'marker' (and 'hours_post_perturbation' for time bins). --pooled and --combined "
        "are VisCy's other two modes, reading input_paths (a list of stores) instead of input_path.",
    )
    m.add_argument("-c", "--config", type=Path, required=True, metavar="CONFIG.yaml", help="compute-mmd YAML")
    mode = m.add_mutually_exclusive_group()
    mode.add_argument("--pooled", action="store_const", const="pooled", dest="mode",
                      help="pool the stores of input_paths and compare them as one (comparisons, condition_aliases); "
                      "writes {output_dir}/pooled_mmd_results.csv with q_value (Benjamini-Hochberg)")
    mode.add_argument("--combined", action="store_const", const="combined", dest="mode",
                      help="compare every pair of the stores of input_paths (one experiment each) per shared marker, "
                      "condition and time bin, after mean-centring; writes {output_dir}/combined_mmd_results.csv")
    m.add_argument("--json", type=Path, metavar="OUT", help="also write the rows as a JSON list of records")
    m.add_argument("--overwrite", action="store_true", help=OVERWRITE_RECORDED_HELP)
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.set_defaults(func=cmd_evaluate_mmd)
    p = esub.add_parser(
        "pseudotime",
        help="DTW pseudotime of tracks against a template built from annotated onsets (VisCy's numbers)",
        description="VisCy's align_tracks (onsets), build_template (one template per flavour), dtw_align_tracks, "
        "classify_response_groups and the evaluation against annotations, configured by a YAML with one "
        "section per call (docs/conditions_and_time.md). Prints a summary; --json writes every number.",
    )
    p.add_argument("store", type=Path, help="AnnData embedding store (ours or VisCy's)")
    p.add_argument("--annotations", type=Path, metavar="CSV",
                   help="annotation CSV with the onset column (e.g. infection_state); needed unless "
                   "align_tracks.source is prediction")
    p.add_argument("-c", "--config", type=Path, required=True, metavar="CONFIG.yaml", help="pseudotime YAML")
    p.add_argument("--json", type=Path, metavar="OUT", help="JSON file: onsets, templates, per-frame pseudotime, "
                   "per-track paths, response groups, evaluation")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_RECORDED_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate_pseudotime)


def check_csv_output(csv: Path, inputs: dict, overwrite: bool) -> None:
    """Refuse the CSV output before any work (the safe write path's checks); its folder (output_dir) may be missing:
    VisCy makes it, so the first missing folder on the way is checked as the target instead."""
    from napari_dynaclr.core.output import check_output_path, check_target

    folder = csv.parent
    if folder.is_dir():
        check_output_path(csv, overwrite, inputs, kind="csv")
        return
    first_missing = folder
    while not first_missing.parent.exists() and first_missing.parent != first_missing:
        first_missing = first_missing.parent
    check_target(first_missing, inputs)


def write_outputs(files: dict[Path, tuple[str, str]], inputs: dict, overwrite: bool) -> None:
    """Write every output text file through the safe write path (atomic, never into an input), making a missing
    output folder first (VisCy makes output_dir), and record it in its folder's manifest. *files*:
    ``{path: (text, kind)}``."""
    from napari_dynaclr.core.output import make_folder, write_text

    for path, (text, kind) in files.items():
        make_folder(path.parent)
        write_text(path, text, overwrite, inputs, kind=kind, record=True)
        print(f"wrote {path}", file=sys.stderr)


def _read(store: Path):
    from napari_dynaclr.core.store import read_store

    warnings.filterwarnings("ignore", message=".*Observation names are not unique.*")
    return read_store(store)


class _Bar:
    """A progress callback ``(done, total, what)`` drawing a bar on a terminal."""

    def __init__(self, desc: str, quiet: bool):
        self.desc, self.quiet, self.bar = desc, quiet, None

    def __call__(self, done: int, total: int, what: str) -> None:
        if self.bar is None:
            self.bar = progress_bar(total, self.desc, self.quiet, leave=False) or False
        if self.bar:
            self.bar.set_postfix_str(str(what)[:30])
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar:
            self.bar.close()


def _check_outputs(csv: Path, args, inputs: dict) -> None:
    from napari_dynaclr.core.output import check_output_path

    if args.json is not None:
        check_output_path(args.json, args.overwrite, inputs, kind="json")
        if os.path.realpath(args.json) == os.path.realpath(csv):
            raise ConfigError(f"--json {args.json} is the CSV output; choose another file")
    check_csv_output(csv, inputs, args.overwrite)


def _row_title(rec: dict) -> str:
    """Where a row of any mode is, in words: ``label @ experiment/marker [bin]`` or ``condition @ marker e1 vs e2``."""
    if "exp_a" in rec:
        where = f"{rec['condition']} @ {rec['marker']} {rec['exp_a']} vs {rec['exp_b']}"
    elif "experiment" in rec:
        where = f"{rec['label']} @ {rec['experiment']}/{rec['marker']}"
    else:
        where = f"{rec['label']} @ {rec['marker']}"
    if rec["hours_bin_start"] is not None:
        where += f" [{rec['hours_bin_start']:g}, {rec['hours_bin_end']:g}) h"
    return where


def _finish(result, csv: Path, args, inputs: dict, cfg, mode: str | None) -> int:
    """Write the CSV (and JSON) and, with ``save_plots``, VisCy's figures (all drawn before anything is written)."""
    from napari_dynaclr.evaluate.mmd_plots import draw_figures, write_figures

    files = {csv: (result.to_csv(), "csv")}
    records = result.to_records()
    if args.json is not None:
        files[args.json] = (json.dumps(records, indent=1, allow_nan=False) + "\n", "json")
    figures = draw_figures(mode, result.table, cfg) if cfg.save_plots else {}
    write_outputs(files, inputs, args.overwrite)
    for path in write_figures(figures, csv.parent, inputs):
        print(f"wrote {path}", file=sys.stderr)
    for rec in records:
        numbers = (f"MMD² {rec['mmd2']:.4g}, p {rec['p_value']:.4g}, z {rec['activity_zscore']:.3g}"
                   if rec["mmd2"] is not None else "NaN (too few cells)")
        if rec.get("q_value") is not None:
            numbers += f", q {rec['q_value']:.4g}"
        print(f"{_row_title(rec)}: n {rec['n_a']}/{rec['n_b']}, {numbers}")
    for note in result.notes:
        print(f"note: {note}")
    return 0


def _run_with_bar(run, *call):
    bar = _Bar("mmd", call[-1])
    try:
        return run(*call[:-1], progress=bar)
    finally:
        bar.close()


def cmd_evaluate_mmd(args) -> int:
    from napari_dynaclr.evaluate.mmd import plan_mmd, run_mmd, select_embedding
    from napari_dynaclr.evaluate.mmd_config import load_mmd_config
    from napari_dynaclr.evaluate.mmd_plots import check_figures, planned_files

    mode = getattr(args, "mode", None)
    cfg = load_mmd_config(args.config, mode)
    if mode is not None:
        return _cmd_stores(args, cfg, mode)
    store, out_dir = Path(cfg.input_path), Path(cfg.output_dir)
    inputs = {"store": store, "config": args.config}
    if args.json is not None:
        from napari_dynaclr.core.output import check_output_path

        check_output_path(args.json, args.overwrite, inputs, kind="json")
    adata = _read(store)
    X = select_embedding(adata, cfg.embedding_key)
    facets = plan_mmd(adata.obs, cfg)  # every refusal about the data, before the work
    experiment = facets[0].experiment if facets else "unknown"
    csv = out_dir / f"{experiment}_mmd_results.csv"
    _check_outputs(csv, args, inputs)
    if cfg.save_plots:
        check_figures(planned_files(None, cfg, experiment), out_dir, inputs)
    result = _run_with_bar(run_mmd, adata.obs, X, cfg, args.quiet)
    return _finish(result, csv, args, inputs, cfg, None)


def _cmd_stores(args, cfg, mode: str) -> int:
    """``--pooled`` / ``--combined``: every store of ``input_paths`` found and every output checked before any
    store is read; the data checked before any distance is computed."""
    from napari_dynaclr.errors import StoreError
    from napari_dynaclr.evaluate.mmd_combined import COMBINED_CSV, run_mmd_combined
    from napari_dynaclr.evaluate.mmd_plots import check_figures, planned_files
    from napari_dynaclr.evaluate.mmd_pooled import POOLED_CSV, run_mmd_pooled

    paths = [Path(p) for p in cfg.input_paths]
    for i, path in enumerate(paths):
        if not path.exists():
            raise StoreError(f"input_paths[{i}]: embedding store not found: {path} (relative paths are relative to "
                             f"the working directory, {Path.cwd()}, as in VisCy)")
    inputs = {**{f"store {i + 1}": p for i, p in enumerate(paths)}, "config": args.config}
    csv = Path(cfg.output_dir) / (POOLED_CSV if mode == "pooled" else COMBINED_CSV)
    _check_outputs(csv, args, inputs)
    if cfg.save_plots and mode == "pooled":
        check_figures(planned_files(mode, cfg), csv.parent, inputs)
    stores = [(str(p), _read(p)) for p in paths]
    if cfg.save_plots and mode == "combined":
        check_figures(planned_files(mode, cfg, markers=_shared_markers(stores)), csv.parent, inputs)
    run = run_mmd_pooled if mode == "pooled" else run_mmd_combined
    result = _run_with_bar(run, stores, cfg, args.quiet)
    return _finish(result, csv, args, inputs, cfg, mode)


def _shared_markers(stores: list) -> list[str]:
    """The markers of two or more of the stores (before obs_filter: the figure names --combined may draw)."""
    import pandas as pd

    counts: dict[str, int] = {}
    for _, adata in stores:
        if "marker" in adata.obs.columns:
            for marker in pd.unique(adata.obs["marker"].dropna().astype(str)):
                counts[marker] = counts.get(marker, 0) + 1
    return sorted(m for m, n in counts.items() if n >= 2)


def cmd_evaluate_pseudotime(args) -> int:
    import numpy as np

    from napari_dynaclr.evaluate.annotations import read_annotations
    from napari_dynaclr.evaluate.mmd import select_embedding
    from napari_dynaclr.evaluate.pseudotime import load_pseudotime_config, run_pseudotime

    cfg = load_pseudotime_config(args.config)
    inputs = {"store": args.store, "annotations": args.annotations, "config": args.config}
    if args.json is not None:
        check_report(args.json, inputs, args.overwrite)
    annotations = read_annotations(args.annotations) if args.annotations is not None else None
    adata = _read(args.store)
    X = select_embedding(adata, cfg.embedding_key)
    bar = _Bar("pseudotime", args.quiet)
    try:
        result = run_pseudotime(np.asarray(X), adata.obs, annotations, cfg, progress=bar)
    finally:
        bar.close()
    if args.json is not None:
        write_report(args.json, result.to_dict(), "evaluate pseudotime", inputs, args.overwrite, record=True)
    print(f"onsets: {len(result.t_perturb)} tracks with an onset ({len(result.aligned)} rows)")
    for name, flavor in result.flavors.items():
        tpl = flavor.template
        ev = f", PCA explains {tpl.explained_variance:.1%}" if tpl.explained_variance is not None else ""
        print(f"{name}: template of {len(tpl)} frames x {tpl.template.shape[1]} from {tpl.n_input_tracks} tracks{ev}")
        for mode, res in flavor.modes.items():
            groups = res.response_groups["response_group"].value_counts().to_dict()
            auc = (res.evaluation or {}).get("pseudotime_vs_annotation_auc")
            shown = f", AUC vs annotation {auc:.3f}" if auc is not None else ""
            print(f"  {mode}: {len(res.alignments)} tracks aligned; "
                  + ", ".join(f"{k} {v}" for k, v in sorted(groups.items())) + shown)
    for note in result.notes:
        print(f"note: {note}")
    return 0
