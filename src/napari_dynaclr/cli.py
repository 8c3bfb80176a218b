"""Command line: ``napari-dynaclr predict | verify | evaluate | cell-index | demo | info``.

Bad input prints one line ``napari-dynaclr: error: ...`` and exits non-zero (2); ``--debug`` shows the
traceback. Ctrl-C / SIGTERM stop the run and leave nothing at the output path (exit 130).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import warnings
from pathlib import Path

from napari_dynaclr.errors import Cancelled, ConfigError, DynaclrError, InterruptedAfterCommit

PROG = "napari-dynaclr"


def _add_predict(sub):
    p = sub.add_parser(
        "predict",
        help="predict embeddings for every tracked cell of a plate",
        description="Predict DynaCLR embeddings. Either give a VisCy predict.yml (-c) or plain flags "
        "(--checkpoint --plate --tracks --channels --z-range --patch-size --output). Flags override the config.",
    )
    p.add_argument("-c", "--config", type=Path, help="VisCy predict.yml (LightningCLI layout), used as-is")
    p.add_argument("--ckpt-path", "--checkpoint", dest="ckpt_path", type=Path, help="Lightning .ckpt file")
    p.add_argument("--plate", type=Path, help="HCS OME-Zarr plate (data_path)")
    p.add_argument("--tracks", type=Path, help="tracks folder: <tracks>/<row>/<col>/<fov>/*.csv")
    p.add_argument("--channels", nargs="+", help="source channels in model order (e.g. Phase3D RFP)")
    p.add_argument("--z-range", nargs=2, type=int, metavar=("START", "STOP"), help="z slices, stop exclusive")
    p.add_argument("--patch-size", nargs="+", type=int, metavar="PX", help="YX patch size (one or two values)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--norm-level", default=None,
                   choices=["fov_statistics", "dataset_statistics", "timepoint_statistics", "none"],
                   help="plain flags: z-score every channel with these statistics (default fov_statistics; "
                        "Bag of Channels: timepoint_statistics)")
    boc = p.add_argument_group(
        "Bag of Channels", "VisCy's BoC models (one sample per cell, timepoint and channel): cells from --cell-index, "
        "or from --plate/--tracks with the experiment metadata (--collection, or --channels with --markers, "
        "--pixel-size and --perturbation-wells)")
    boc.add_argument("--cell-index", type=Path, help="VisCy cell-index parquet (build-/preprocess-cell-index)")
    boc.add_argument("--collection", type=Path, help="VisCy collection YAML (experiments: channels, markers, "
                     "perturbation wells, pixel sizes); --plate/--tracks replace its paths")
    boc.add_argument("--markers", nargs="+", help="the marker each of --channels images (e.g. Phase3D G3BP1)")
    boc.add_argument("--pixel-size", nargs="+", type=float, metavar="UM", help="plate pixel size: xy [z] (um)")
    boc.add_argument("--perturbation-wells", nargs="+", metavar="LABEL=WELLS",
                     help="wells per perturbation, e.g. mock=A/1 infected=A/2,B/1")
    boc.add_argument("--interval-minutes", type=float, help="minutes between timepoints (default 30)")
    boc.add_argument("--start-hpi", type=float, help="hours post perturbation at t=0 (default 0)")
    boc.add_argument("--z-window", type=int, help="slices the model takes (default 1)")
    boc.add_argument("--z-extraction-window", type=int, help="slices read around the focus before the z reduction")
    boc.add_argument("--z-focus-offset", type=float, help="fraction of the window below the focus (default 0.5)")
    boc.add_argument("--focus-channel", help="channel of the plate's focus_slice statistics (e.g. Phase3D)")
    boc.add_argument("--reference-pixel-size", nargs="+", type=float, metavar="UM",
                     help="the model's pixel size: xy [z] (um); patches are rescaled to it")
    boc.add_argument("--final-patch-size", nargs="+", type=int, metavar="PX", help="YX size fed to the model")
    boc.add_argument("--no-z-reduction", action="store_true",
                     help="no projection (default for one-slice models: max over z, middle slice for label-free)")
    p.add_argument("--include-wells", nargs="+", metavar="WELL", help="only these wells, e.g. A/1 B/2")
    p.add_argument("--exclude-fovs", nargs="+", metavar="FOV", help="skip these FOVs, e.g. A/1/0")
    p.add_argument("-o", "--output", type=Path, help="output AnnData zarr store")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output store")
    p.add_argument("--device", help="auto (default: CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--devices", help="several devices through Lightning (e.g. 2, or 'auto')")
    p.add_argument("--strategy", help="Lightning strategy for several devices (default ddp)")
    p.add_argument("--num-nodes", type=int, help="nodes for multi-node runs (Lightning cluster environments)")
    p.add_argument("--precision", help="32-true (default), bf16-mixed, 16-mixed (GPU)")
    p.add_argument("--loader-threads", type=int, help="background threads that read and normalise batches")
    p.add_argument("--cpu-backend", help="CPU encoder kernels at float32: auto (default: OpenVINO when installed and "
                   "the run has >= 1000 cells of 160 px, else fused oneDNN ConvNeXt blocks; checked against plain "
                   "PyTorch on the first cells), openvino, onednn, eager (plain PyTorch)")
    p.add_argument("--pca", type=int, metavar="N", help="add obsm X_pca with N components")
    p.add_argument("--umap", action="store_true", help="add obsm X_umap (VisCy's UMAP parameters)")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="predict cells whose patch holds NaN/Inf pixels and write NaN embeddings (counted and "
                        "reported) instead of refusing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)


def build_config(args):
    """The PredictConfig from -c and/or flags (flags win)."""
    from napari_dynaclr.core.config import CPU_BACKENDS, PRECISIONS, PredictConfig
    from napari_dynaclr.core.predict_yml import load_predict_yaml
    from napari_dynaclr.core.reduce import DEFAULT_UMAP_KWARGS
    from napari_dynaclr.core.schema import check_reduction_kwargs

    boc_flags = [f for f in BOC_FLAGS if getattr(args, f, None) not in (None, False)]
    if args.config is not None:
        cfg = load_predict_yaml(args.config)
        for flag in ("plate", "tracks", "channels", "z_range", "patch_size", *BOC_FLAGS):
            if getattr(args, flag) not in (None, False):
                raise ConfigError(f"--{flag.replace('_', '-')} cannot be combined with -c/--config; edit the config")
    elif boc_flags or args.cell_index is not None:
        cfg = _boc_config(args)
    else:
        missing = [f"--{n.replace('_', '-')}" for n in ("plate", "tracks", "channels", "z_range", "patch_size")
                   if getattr(args, n) is None]
        if missing:
            raise ConfigError(f"missing {', '.join(missing)} (or give a VisCy predict.yml with -c)")
        if len(args.patch_size) > 2:
            raise ConfigError("--patch-size takes one or two values")
        cfg = PredictConfig.plain(args.plate, args.tracks, args.channels, tuple(args.z_range), args.patch_size,
                                  args.norm_level or "fov_statistics")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    if args.precision is not None and args.precision not in PRECISIONS:
        raise ConfigError(f"--precision {args.precision!r} is not one of {', '.join(PRECISIONS)}")
    if args.cpu_backend is not None and args.cpu_backend not in CPU_BACKENDS:
        raise ConfigError(f"--cpu-backend {args.cpu_backend!r} is not one of {', '.join(CPU_BACKENDS)}")
    devices = args.devices
    if devices is not None and str(devices).lstrip("-").isdigit():
        devices = int(devices)
    flags = {
        "ckpt_path": args.ckpt_path, "output_path": args.output, "overwrite": True if args.overwrite else None,
        "batch_size": args.batch_size, "include_wells": args.include_wells or None,
        "exclude_fovs": args.exclude_fovs or None, "accelerator": args.device, "devices": devices,
        "strategy": args.strategy, "num_nodes": args.num_nodes, "precision": args.precision,
        "num_workers": max(1, args.loader_threads) if args.loader_threads is not None else None,
        "cpu_backend": args.cpu_backend,
        "pca_kwargs": {"n_components": args.pca} if args.pca is not None else None,
        "umap_kwargs": dict(DEFAULT_UMAP_KWARGS) if args.umap else None,
        "allow_nonfinite": True if args.allow_nonfinite else None,
    }
    cfg = cfg.with_overrides(**{k: v for k, v in flags.items() if v is not None})
    check_reduction_kwargs(cfg)  # before any work: a bad argument never fails after the prediction
    return cfg


BOC_FLAGS = ("cell_index", "collection", "markers", "pixel_size", "perturbation_wells", "interval_minutes",
             "start_hpi", "z_window", "z_extraction_window", "z_focus_offset", "focus_channel",
             "reference_pixel_size", "final_patch_size", "no_z_reduction")


def _boc_config(args):
    """A Bag-of-Channels config from plain flags (--cell-index, or --plate/--tracks with the experiment metadata)."""
    from napari_dynaclr.core.boc import BocConfig

    if args.z_range is not None:
        raise ConfigError("--z-range is for classic models; a Bag-of-Channels run places its z window at the plate's "
                          "focus (--z-window, --z-extraction-window, --z-focus-offset)")
    wells = _perturbation_wells(args.perturbation_wells)
    optional = {k: v for k, v in {"z_extraction_window": args.z_extraction_window,
                                  "z_focus_offset": args.z_focus_offset, "z_window": args.z_window,
                                  "patch_size": args.patch_size}.items() if v is not None}
    return BocConfig.plain(
        cell_index=args.cell_index, collection=args.collection, plate=args.plate, tracks=args.tracks,
        channels=args.channels, markers=args.markers, pixel_size=args.pixel_size, perturbation_wells=wells,
        interval_minutes=args.interval_minutes, start_hpi=args.start_hpi, focus_channel=args.focus_channel,
        reference_pixel_size=args.reference_pixel_size, final_patch_size=args.final_patch_size,
        norm_level=args.norm_level or "timepoint_statistics", z_reduction=False if args.no_z_reduction else None,
        **optional,
    )


def _progress(total: int, quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="cell", desc="predict", file=sys.stderr, dynamic_ncols=True)
    return (lambda res: bar.update(res.stop - res.start)), bar.close


def cmd_predict(args) -> int:
    from napari_dynaclr.predict.run import run_prediction

    cfg = build_config(args)
    total = {"n": None}
    bar_update, bar_close = None, lambda: None

    def on_batch(res):
        nonlocal bar_update, bar_close
        if total["n"] is None:
            total["n"] = res.n_cells
            bar_update, bar_close = _progress(res.n_cells, args.quiet)
        if bar_update:
            bar_update(res)

    try:
        summary, adata = run_prediction(cfg, on_batch=on_batch)
    finally:
        bar_close()
    print(
        f"wrote {summary.output_path}: {summary.n_cells} cells from {summary.n_fovs} FOVs "
        f"in {summary.predict_seconds:.1f} s ({summary.cells_per_second:.1f} cells/s on {summary.device}); "
        f"obsm: {', '.join(summary.obsm_keys)}"
    )
    if summary.describe_backend():
        print(summary.describe_backend())
    return 0


def _add_cell_index(sub):
    p = sub.add_parser(
        "cell-index",
        help="build VisCy's cell-index parquet from a plate, its tracks and the experiment metadata",
        description="Build the cell index of a Bag-of-Channels prediction as VisCy's build-cell-index + "
        "preprocess-cell-index do (the same parquet), from a collection YAML (--collection, with --plate/--tracks "
        "replacing its paths) or flags (--plate --tracks --channels --markers --pixel-size --perturbation-wells).",
    )
    p.add_argument("--collection", type=Path, help="VisCy collection YAML")
    p.add_argument("--plate", type=Path)
    p.add_argument("--tracks", type=Path)
    p.add_argument("--channels", nargs="+", help="the plate's channels, one experiment each")
    p.add_argument("--markers", nargs="+", help="the marker each channel images")
    p.add_argument("--pixel-size", nargs="+", type=float, metavar="UM", help="xy [z] (um)")
    p.add_argument("--perturbation-wells", nargs="+", metavar="LABEL=WELLS")
    p.add_argument("--interval-minutes", type=float)
    p.add_argument("--start-hpi", type=float)
    p.add_argument("--focus-channel", help="channel of the plate's focus_slice attributes (z, z_focus_mean)")
    p.add_argument("--include-wells", nargs="+", metavar="WELL")
    p.add_argument("--exclude-fovs", nargs="+", metavar="FOV")
    p.add_argument("--raw", action="store_true", help="build-cell-index only (no statistics, as VisCy's raw index)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output parquet")
    p.add_argument("--overwrite", action="store_true", help="replace an existing parquet file")
    p.set_defaults(func=cmd_cell_index)


def cmd_cell_index(args) -> int:
    from napari_dynaclr.core.cell_index import cell_index_from_plates, write_cell_index
    from napari_dynaclr.core.collection import load_collection, parse_collection

    if args.collection is not None:
        if args.channels or args.markers:
            raise ConfigError("--channels/--markers describe the experiments; give them or --collection, not both")
        experiments = load_collection(args.collection, args.plate, args.tracks)
        inputs = {"collection": args.collection}
    else:
        from napari_dynaclr.core.boc import flag_collection

        if not args.channels:
            raise ConfigError("give --collection, or --plate --tracks --channels --markers --perturbation-wells")
        doc = flag_collection(args.plate, args.tracks, args.channels, args.markers, args.pixel_size,
                               _perturbation_wells(args.perturbation_wells), args.interval_minutes, args.start_hpi)
        experiments = parse_collection(doc, Path.cwd(), "the experiment flags")
        inputs = {}
    for i, e in enumerate(experiments):
        inputs[f"plate {i}"], inputs[f"tracks {i}"] = e.data_path, e.tracks_path
    df = cell_index_from_plates(experiments, args.focus_channel, args.include_wells, args.exclude_fovs,
                                preprocess=not args.raw)
    write_cell_index(df, args.output, args.overwrite, inputs)
    print(f"wrote {args.output}: {len(df)} rows ({df['experiment'].nunique()} experiment(s), "
          f"{(df['well'] + '/' + df['fov']).nunique()} FOV(s))")
    return 0


def _perturbation_wells(items):
    if not items:
        return None
    wells: dict = {}
    for item in items:
        label, sep, listed = item.partition("=")
        if not sep or not label or not listed:
            raise ConfigError(f"--perturbation-wells {item!r}: expected LABEL=WELL[,WELL...] (e.g. mock=A/1)")
        wells.setdefault(label, []).extend(w for w in listed.split(",") if w)
    return wells


def _add_demo(sub):
    p = sub.add_parser("demo", help="build a synthetic plate + checkpoint offline and predict it")
    p.add_argument("--out", type=Path, default=Path("dynaclr-demo"),
                   help="folder for the demo (default ./dynaclr-demo)")
    p.add_argument("--fovs-per-well", type=int, default=2)
    p.add_argument("--cells-per-fov", type=int, default=10)
    p.add_argument("--timepoints", type=int, default=8)
    p.add_argument("--no-umap", action="store_true", help="skip UMAP (faster)")
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true", help="rebuild an existing demo folder")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from napari_dynaclr.core.predict_yml import load_predict_yaml
    from napari_dynaclr.core.synthetic import SyntheticSpec
    from napari_dynaclr.demo import clear_demo_folder, make_demo_inputs, summarize
    from napari_dynaclr.errors import OutputError
    from napari_dynaclr.predict.run import run_prediction

    out = args.out
    if out.exists() and not out.is_dir():
        raise OutputError(f"demo folder {out} is a file; choose another --out")
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise OutputError(f"demo folder {out} is not empty; pass --overwrite or choose --out")
        clear_demo_folder(out)
    spec = SyntheticSpec(fovs_per_well=args.fovs_per_well, cells_per_fov=args.cells_per_fov,
                         timepoints=args.timepoints)
    paths = make_demo_inputs(out, spec, umap=not args.no_umap)
    print(f"demo inputs in {out}: plate.zarr, tracks/, model.ckpt, predict.yml")
    cfg = load_predict_yaml(paths["config"])
    cfg.accelerator = args.device
    bar = {}

    def on_batch(res):
        if not bar and not args.quiet and sys.stderr.isatty():
            from tqdm import tqdm

            bar["b"] = tqdm(total=res.n_cells, unit="cell", desc="predict", file=sys.stderr)
        if bar:
            bar["b"].update(res.stop - res.start)

    summary, adata = run_prediction(cfg, on_batch=on_batch)
    if bar:
        bar["b"].close()
    print(f"wrote {summary.output_path}: prediction {summary.predict_seconds:.1f} s "
          f"({summary.cells_per_second:.1f} cells/s on {summary.device}), {summary.seconds:.1f} s with reductions")
    for line in summarize(adata, paths["truth"]):
        print("  " + line)
    print(f"open it in napari:  napari {summary.output_path}   (or: Plugins > DynaCLR)")
    return 0


def _add_info(sub):
    p = sub.add_parser("info", help="show the encoder config inferred from a checkpoint")
    p.add_argument("checkpoint", type=Path)
    p.set_defaults(func=cmd_info)


def cmd_info(args) -> int:
    from napari_dynaclr.core.architecture import describe_config
    from napari_dynaclr.model.checkpoint import infer_config, load_checkpoint, read_state_dict

    sd = read_state_dict(args.checkpoint)
    cfg = infer_config(sd)
    loaded = load_checkpoint(args.checkpoint, cfg)
    print(f"{args.checkpoint}: {len(sd)} tensors, {loaded.n_parameters:,} parameters; keys match")
    print(f"encoder: {describe_config(cfg)}")
    for k, v in cfg.to_dict().items():
        print(f"  {k}: {v}")
    return 0


def _add_verify(sub):
    p = sub.add_parser(
        "verify",
        help="compare a prediction store with a reference store",
        description="Compare two AnnData embedding stores (ours or VisCy's) cell by cell, aligned on "
        "(fov_name, track_id, t, id). Default contract = VisCy's: atol 0.02, rtol 1e-2, Pearson r >= 0.999, "
        "no missing rows. Exit 0 pass, 1 fail, 2 unreadable/incompatible input.",
    )
    p.add_argument("prediction", type=Path, help="store to check")
    p.add_argument("reference", type=Path, help="reference store")
    p.add_argument("--atol", type=float, default=0.02)
    p.add_argument("--rtol", type=float, default=1e-2)
    p.add_argument("--min-pearson", type=float, default=0.999)
    p.add_argument("--allow-missing", action="store_true", help="rows present on one side only do not fail")
    p.add_argument("--judge-reductions", action="store_true", help="also judge X_pca/X_umap/X_phate")
    p.add_argument("--same-order", action="store_true",
                   help="fail when the rows are in a different order (as VisCy's own test asserts)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the full report as JSON")
    p.add_argument("--worst", type=int, default=5, help="how many worst cells to list (default 5)")
    p.set_defaults(func=_run_verify)


def contract_from_args(args):
    """The :class:`~napari_dynaclr.verify.Contract` the ``verify`` flags describe."""
    from napari_dynaclr.verify import Contract

    return Contract(
        atol=args.atol,
        rtol=args.rtol,
        min_pearson=args.min_pearson,
        allow_missing=bool(getattr(args, "allow_missing", False)),
        judge_reductions=bool(getattr(args, "judge_reductions", False)),
        require_same_order=bool(getattr(args, "same_order", False)),
    )


def _run_verify(args) -> int:
    """``napari-dynaclr verify``: print the report; 0 pass, 1 fail; raise StoreError (→ 2) on bad input."""
    from napari_dynaclr.verify import compare_stores, format_report

    contract = contract_from_args(args)
    worst = int(getattr(args, "worst", 5) or 0)
    report = compare_stores(args.prediction, args.reference, contract)
    print(format_report(report, worst=worst))
    if getattr(args, "json", None) is not None:
        path = Path(args.json)
        try:
            path.write_text(report.to_json(worst=max(worst, 20)) + "\n")
        except OSError as exc:
            raise DynaclrError(f"cannot write {path}: {exc.strerror or exc}") from exc
        print(f"report written to {path}", file=sys.stderr)
    return 0 if report.passed else 1


def _add_evaluate(sub):
    p = sub.add_parser(
        "evaluate",
        help="evaluate a store as VisCy does: temporal smoothness, linear classifier",
        description="Evaluate an embedding store with VisCy's recipes. Bad input exits 2 and writes nothing.",
    )
    esub = p.add_subparsers(dest="evaluation", required=True)
    s = esub.add_parser(
        "smoothness",
        help="temporal smoothness (VisCy's ten statistics)",
        description="VisCy's temporal smoothness: z-scored features, distances of adjacent frames within a track vs "
        "as many random pairs (seed 42); smoothness_score = mean(adjacent)/mean(random), lower is smoother.",
    )
    s.add_argument("store", type=Path, help="AnnData embedding store (ours or VisCy's)")
    s.add_argument("--metric", choices=["cosine", "euclidean"], default="cosine")
    s.add_argument("--group-by", metavar="COL", help="compute per value of this obs column (e.g. marker)")
    s.add_argument("--order", choices=["time", "stored"], default="time",
                   help="rows of a track sorted by t (default) or in stored order (exactly VisCy's)")
    s.add_argument("--distributions", action="store_true", help="also write both distance distributions")
    s.add_argument("--json", type=Path, required=True, metavar="OUT", help="JSON file for the statistics")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_evaluate_smoothness)
    c = esub.add_parser(
        "classifier",
        help="train VisCy's linear classifier on annotated cells (optionally apply it)",
        description="Join an annotation CSV to the store (VisCy's join), train StandardScaler + "
        "LogisticRegression(liblinear, balanced) on the labelled cells with an 80/20 split at seed 42 and write "
        "VisCy's metrics; --apply writes a copy of the store with predicted_<task> for every cell.",
    )
    c.add_argument("store", type=Path, help="AnnData embedding store (ours or VisCy's)")
    c.add_argument("--annotations", type=Path, required=True, metavar="CSV", help="annotation CSV (VisCy's layout)")
    c.add_argument("--task", required=True, metavar="COL", help="label column of the CSV, e.g. infection_state")
    c.add_argument("--split", choices=["cell", "track", "none"], default="cell",
                   help="cell: stratified (VisCy's default); track: no track on both sides; none: no validation")
    c.add_argument("--json", type=Path, required=True, metavar="OUT", help="JSON file for the metrics")
    c.add_argument("--apply", type=Path, metavar="OUT_STORE",
                   help="write a copy of the store with obs predicted_<task>, obsm predicted_<task>_proba")
    c.add_argument("--overwrite", action="store_true", help="replace an existing --apply store")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_evaluate_classifier)


def _steps(total: int, desc: str, quiet: bool):
    """A tqdm bar of *total* steps on a terminal (None otherwise)."""
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=False)


def _check_json_output(path: Path, inputs: dict) -> None:
    from napari_dynaclr.errors import OutputError
    from napari_dynaclr.evaluate.annotations import check_text_output

    check_text_output(path, overwrite=True)
    real = os.path.realpath(path)
    for name, given in inputs.items():
        if given is not None and (real == os.path.realpath(given) or Path(given).resolve() in Path(real).parents):
            raise OutputError(f"--json {path} would overwrite the input {name} {given}; choose another file")


def _write_json(path: Path, payload: dict) -> None:
    import json

    from napari_dynaclr.evaluate.annotations import write_text_atomically

    write_text_atomically(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def _quiet_obs_names() -> None:
    # VisCy's stores repeat obs names per batch; nothing here uses them
    warnings.filterwarnings("ignore", message=".*Observation names are not unique.*")


def cmd_evaluate_smoothness(args) -> int:
    import numpy as np

    from napari_dynaclr.core.store import read_store
    from napari_dynaclr.evaluate.smoothness import STAT_NAMES, STEPS, compute_smoothness, smoothness_by_group

    _check_json_output(args.json, {"store": args.store})
    _quiet_obs_names()
    adata = read_store(args.store)
    X = np.asarray(adata.X)
    meta = {"store": str(args.store), "metric": args.metric, "order": args.order}
    if args.group_by is None:
        bar = _steps(len(STEPS), "smoothness", args.quiet)

        def step_done(step: str) -> None:
            if bar:
                bar.set_postfix_str(step)
                bar.update(1)

        try:
            res = compute_smoothness(X, adata.obs, metric=args.metric, order=args.order, progress=step_done)
        finally:
            if bar:
                bar.close()
        payload = {**res.to_dict(distributions=args.distributions), **meta}
        lines = [f"{k}: {res.stats[k]:.6g}" for k in STAT_NAMES]
    else:
        if args.group_by not in adata.obs.columns:
            raise ConfigError(f"--group-by {args.group_by!r}: {args.store} has no obs column of that name "
                              f"(columns: {', '.join(map(str, adata.obs.columns))})")
        n_groups = int(adata.obs[args.group_by].nunique(dropna=False))
        bar = _steps(n_groups, "smoothness", args.quiet)
        try:
            results = smoothness_by_group(X, adata.obs, args.group_by, metric=args.metric, order=args.order,
                                          progress=(lambda _v: bar.update(1)) if bar else None)
        finally:
            if bar:
                bar.close()
        payload = {**meta, "group_by": args.group_by,
                   "groups": {g: r.to_dict(distributions=args.distributions) for g, r in results.items()}}
        lines = [f"{g}: smoothness_score {r.stats['smoothness_score']:.6g}, dynamic_range "
                 f"{r.stats['dynamic_range']:.6g}" for g, r in results.items()]
    _write_json(args.json, payload)
    for line in lines:
        print(line)
    return 0


def cmd_evaluate_classifier(args) -> int:
    import numpy as np

    from napari_dynaclr.core.output import OutputGuard
    from napari_dynaclr.core.store import read_store, write_store
    from napari_dynaclr.evaluate.annotations import join_annotations, read_annotations
    from napari_dynaclr.evaluate.classifier import apply_predictions, track_groups, train_classifier

    inputs = {"store": args.store, "annotations": args.annotations}
    _check_json_output(args.json, inputs)
    if args.apply is not None and os.path.realpath(args.apply) == os.path.realpath(args.json):
        raise ConfigError("--apply and --json name the same path")
    annotations = read_annotations(args.annotations)
    _quiet_obs_names()
    guard = OutputGuard(args.apply, args.overwrite, inputs) if args.apply is not None else contextlib.nullcontext()
    with guard:
        bar = _steps(4 if args.apply is not None else 3, "classifier", args.quiet)
        try:
            adata = read_store(args.store)
            bar and bar.update(1)
            labels = join_annotations(adata.obs, annotations, args.task)
            bar and bar.update(1)
            groups = track_groups(adata.obs) if args.split == "track" else None
            result = train_classifier(np.asarray(adata.X), labels.to_numpy(), groups=groups, split=args.split,
                                      task=args.task)
            bar and bar.update(1)
            if args.apply is not None:
                apply_predictions(adata, result.model, args.task)
                write_store(adata, args.apply, overwrite=args.overwrite, inputs=inputs, guard=guard)
                bar and bar.update(1)
        finally:
            if bar:
                bar.close()
    info = result.to_dict()
    payload = {"task": args.task, "n_samples": info.pop("n_samples"), **info.pop("metrics"), **info,
               "store": str(args.store), "annotations": str(args.annotations)}
    if args.apply is not None:
        payload["applied_to"] = str(args.apply)
    _write_json(args.json, payload)
    m = result.metrics
    shown = [k for k in ("train_accuracy", "val_accuracy", "val_weighted_f1", "val_auroc") if k in m]
    print(f"{args.task}: {result.n_samples} labelled cells, split {result.split}, solver {result.solver}; "
          + ", ".join(f"{k} {m[k]:.4g}" for k in shown))
    if args.apply is not None:
        print(f"wrote {args.apply}: obs predicted_{args.task}, obsm predicted_{args.task}_proba")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Run, inspect and verify VisCy DynaCLR embeddings.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__import__('napari_dynaclr').__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_predict(sub)
    _add_verify(sub)
    _add_evaluate(sub)
    _add_cell_index(sub)
    _add_demo(sub)
    _add_info(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def _on_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one interruption is enough; let the cleanup run
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    def _capped(exc: BaseException, limit: int = 500) -> str:  # a 2 KB input never prints megabytes
        msg = str(exc)
        return msg if len(msg) <= limit else msg[: limit - 1] + "…"

    parser = make_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    args = parser.parse_args(argv)
    if not debug:
        warnings.showwarning = _show_warning
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        logging.getLogger("lightning").setLevel(logging.ERROR)
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if os.name == "posix" else None
    try:
        return int(args.func(args) or 0)
    except InterruptedAfterCommit as exc:  # the store was already complete: say so
        print(f"{PROG}: {_capped(exc)}", file=sys.stderr)
        return exc.exit_code
    except Cancelled as exc:
        print(f"{PROG}: {_capped(exc)}; nothing written", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing written", file=sys.stderr)
        return 130
    except DynaclrError as exc:
        if debug:
            raise
        print(f"{PROG}: error: {_capped(exc)}", file=sys.stderr)
        return exc.exit_code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
