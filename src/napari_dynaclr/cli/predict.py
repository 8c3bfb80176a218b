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
    wells = perturbation_wells(args.perturbation_wells)
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
