"""``napari-dynaclr predict``: a VisCy predict.yml or plain flags → an embedding store."""

from __future__ import annotations

from pathlib import Path

from napari_dynaclr.cli.progress import BatchProgress
from napari_dynaclr.errors import ConfigError


def add_parser(sub):
    p = sub.add_parser(
        "predict",
        help="predict embeddings for every tracked cell of a plate",
        description="Predict DynaCLR embeddings. Either give a VisCy predict.yml (-c) or plain flags "
        "(--checkpoint --plate --tracks --channels --z-range --patch-size --output). Flags override the config.",
    )
    p.add_argument("-c", "--config", type=Path, help="VisCy predict.yml (LightningCLI layout), used as-is")
    p.add_argument("--ckpt-path", "--checkpoint", dest="ckpt_path", type=Path, help="Lightning .ckpt file")
    p.add_argument("--plate", type=Path, help="HCS OME-Zarr plate (data_path)")
    p.add_argument("--tracks", type=Path, help="the tracks: a folder <tracks>/<row>/<col>/<fov>/*.csv (or ultrack's "
                   "*.parquet), a folder of ultrack exports tracks_<row>_<col>_<fov>.csv, one CSV/parquet table with "
                   "a fov_name column, or one ultrack export of a one-FOV run")
    p.add_argument("--channels", nargs="+", help="source channels in model order (e.g. Phase3D RFP)")
    p.add_argument("--z-range", nargs=2, type=int, metavar=("START", "STOP"), help="z slices, stop exclusive")
    p.add_argument("--patch-size", nargs="+", type=int, metavar="PX", help="YX patch size (one or two values)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--norm-level", default=None,
                   choices=["fov_statistics", "dataset_statistics", "timepoint_statistics", "none"],
                   help="plain flags: z-score every channel with these statistics (default fov_statistics; "
                        "Bag of Channels: timepoint_statistics)")
    meta = p.add_argument_group(
        "Experiment metadata", "what the experiment is: a classic run writes it as obs columns (experiment, marker, "
        "perturbation, hours_post_perturbation: what VisCy's compute-mmd needs); a Bag-of-Channels run built from "
        "--plate/--tracks takes its experiments from it (one per channel of --channels)")
    meta.add_argument("--collection", type=Path, help="VisCy collection YAML (experiments: channels, markers, "
                      "perturbation wells, time axis, pixel sizes); --plate/--tracks replace its paths")
    meta.add_argument("--experiment", dest="experiment_name", help="the experiment's name (obs 'experiment')")
    meta.add_argument("--markers", "--marker", nargs="+", help="what the channels image: one marker per channel of "
                      "--channels (Bag of Channels), the store's one marker (classic, e.g. the reporter)")
    meta.add_argument("--perturbation-wells", nargs="+", metavar="LABEL=WELLS",
                      help="wells per perturbation, e.g. mock=A/1 infected=A/2,B/1")
    meta.add_argument("--interval-minutes", type=float, help="minutes between timepoints (Bag of Channels: default 30)")
    meta.add_argument("--start-hpi", type=float, help="hours post perturbation at t=0 (default 0)")
    meta.add_argument("--pixel-size", nargs="+", type=float, metavar="UM", help="plate pixel size: xy [z] (um); "
                      "Bag of Channels")
    boc = p.add_argument_group(
        "Bag of Channels", "VisCy's BoC models (one sample per cell, timepoint and channel): cells from --cell-index, "
        "or from --plate/--tracks with the experiment metadata (--collection, or --channels with --markers, "
        "--pixel-size and --perturbation-wells). Any of these flags (or experiment metadata without --z-range) makes "
        "the run a Bag-of-Channels one")
    boc.add_argument("--cell-index", type=Path, help="VisCy cell-index parquet (build-/preprocess-cell-index)")
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
    """The run's config from -c and/or flags (flags win): the same settings the dock gives, validated once by
    :class:`~napari_dynaclr.core.config.PredictConfig`."""
    from napari_dynaclr.core.config import PredictConfig
    from napari_dynaclr.core.predict_yml import load_predict_yaml

    settings = {**_run_settings(args), **_experiment_settings(args)}
    if args.config is not None:
        for flag in ("plate", "tracks", "channels", "z_range", "patch_size", *BOC_FLAGS):
            if getattr(args, flag) not in (None, False):
                raise ConfigError(f"--{flag.replace('_', '-')} cannot be combined with -c/--config; edit the config")
        return load_predict_yaml(args.config).with_overrides(**settings)
    if is_boc(args):
        return PredictConfig.build(_boc_source(args), **settings)
    missing = [f"--{n.replace('_', '-')}" for n in ("plate", "tracks", "channels", "z_range", "patch_size")
               if getattr(args, n) is None]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)} (or give a VisCy predict.yml with -c)")
    return PredictConfig.plain(args.plate, args.tracks, args.channels, tuple(args.z_range), args.patch_size,
                               args.norm_level or "fov_statistics", **settings)


#: flags only a Bag-of-Channels run takes
BOC_FLAGS = ("cell_index", "pixel_size", "z_window", "z_extraction_window", "z_focus_offset", "focus_channel",
             "reference_pixel_size", "final_patch_size", "no_z_reduction")
#: the experiment metadata (either family)
EXPERIMENT_FLAGS = ("collection", "experiment_name", "markers", "perturbation_wells", "interval_minutes", "start_hpi")


def is_boc(args) -> bool:
    """A Bag-of-Channels run: a BoC flag, or experiment metadata without a classic run's --z-range."""
    given = [f for f in (*BOC_FLAGS, *EXPERIMENT_FLAGS) if getattr(args, f, None) not in (None, False)]
    return any(f in BOC_FLAGS for f in given) or (bool(given) and args.z_range is None)


def _run_settings(args) -> dict:
    """The common settings the flags give (None: not given)."""
    from napari_dynaclr.core.reductions import DEFAULT_UMAP_KWARGS

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
    return {k: v for k, v in flags.items() if v is not None}


def _experiment_settings(args) -> dict:
    given = {"collection_path": args.collection, "experiment_name": args.experiment_name, "markers": args.markers,
             "perturbation_wells": perturbation_wells(args.perturbation_wells),
             "interval_minutes": args.interval_minutes, "start_hpi": args.start_hpi, "pixel_size": args.pixel_size}
    return {k: v for k, v in given.items() if v is not None}


def _boc_source(args) -> dict:
    """A Bag-of-Channels source from plain flags (--cell-index, or --plate/--tracks with the experiment metadata)."""
    from napari_dynaclr.core.boc import BocNormalization

    if args.z_range is not None:
        raise ConfigError("--z-range is for classic models; a Bag-of-Channels run places its z window at the plate's "
                          "focus (--z-window, --z-extraction-window, --z-focus-offset)")
    ref = list(args.reference_pixel_size or [])
    if len(ref) > 2:
        raise ConfigError("--reference-pixel-size takes one or two values (xy [z], micrometres)")
    patch = _square(args.patch_size or [192], "--patch-size")
    level = args.norm_level or "timepoint_statistics"
    z_window = args.z_window if args.z_window is not None else 1
    source = {
        "kind": "boc", "cell_index_path": args.cell_index, "data_path": args.plate, "tracks_path": args.tracks,
        "source_channel": args.channels, "focus_channel": args.focus_channel,
        "reference_pixel_size_xy_um": ref[0] if ref else None,
        "reference_pixel_size_z_um": ref[1] if len(ref) > 1 else None,
        "z_window": z_window, "z_extraction_window": args.z_extraction_window,
        "z_focus_offset": args.z_focus_offset if args.z_focus_offset is not None else 0.5,
        "yx_patch_size": patch,
        "final_yx_patch_size": _square(args.final_patch_size, "--final-patch-size") if args.final_patch_size else patch,
        "normalizations": [] if level == "none" else [BocNormalization(level=level)],
        "z_reduction": False if args.no_z_reduction else z_window == 1,
    }
    return source


def _square(values, flag: str):
    """One value: a square; two: as given (more: refused by the settings' check)."""
    if not 1 <= len(values) <= 2:
        raise ConfigError(f"{flag} takes one or two values, got {list(values)}")
    return tuple(values) * (2 // len(values))


def cmd_predict(args) -> int:
    from napari_dynaclr.predict.run import run_prediction

    cfg = build_config(args)
    progress = BatchProgress(args.quiet)
    try:
        summary, adata = run_prediction(cfg, on_batch=progress)
    finally:
        progress.close()
    print(
        f"wrote {summary.output_path}: {summary.n_cells} cells from {summary.n_fovs} FOVs "
        f"in {summary.predict_seconds:.1f} s ({summary.cells_per_second:.1f} cells/s on {summary.device}); "
        f"obsm: {', '.join(summary.obsm_keys)}"
    )
    if summary.describe_backend():
        print(summary.describe_backend())
    return 0


def perturbation_wells(items):
    if not items:
        return None
    wells: dict = {}
    for item in items:
        label, sep, listed = item.partition("=")
        if not sep or not label or not listed:
            raise ConfigError(f"--perturbation-wells {item!r}: expected LABEL=WELL[,WELL...] (e.g. mock=A/1)")
        wells.setdefault(label, []).extend(w for w in listed.split(",") if w)
    return wells
