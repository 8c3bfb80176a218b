"""``napari-dynaclr demo``: a synthetic plate, a deterministic checkpoint and their prediction, offline."""

from __future__ import annotations

from pathlib import Path

from napari_dynaclr.cli.progress import BatchProgress


def add_parser(sub):
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
    from napari_dynaclr.demo import demo_folder, summarize, write_demo_inputs
    from napari_dynaclr.predict.run import run_prediction

    out = args.out
    spec = SyntheticSpec(fovs_per_well=args.fovs_per_well, cells_per_fov=args.cells_per_fov,
                         timepoints=args.timepoints)
    with demo_folder(out) as owned:  # replaces only what an earlier demo recorded, unchanged
        owned.clear(args.overwrite)
        paths = write_demo_inputs(owned, spec, umap=not args.no_umap)
        print(f"demo inputs in {out}: plate.zarr, tracks/, model.ckpt, predict.yml")
        cfg = load_predict_yaml(paths["config"])
        cfg.accelerator = args.device
        owned.expect_store(paths["output"].name)
        progress = BatchProgress(args.quiet)
        try:
            summary, adata = run_prediction(cfg, on_batch=progress)
        finally:
            progress.close()
        owned.record(paths["output"].name)
    print(f"wrote {summary.output_path}: prediction {summary.predict_seconds:.1f} s "
          f"({summary.cells_per_second:.1f} cells/s on {summary.device}), {summary.seconds:.1f} s with reductions")
    for line in summarize(adata, paths["truth"]):
        print("  " + line)
    print(f"open it in napari:  napari {summary.output_path}   (or: Plugins > napari-dynaclr > DynaCLR)")
    return 0
