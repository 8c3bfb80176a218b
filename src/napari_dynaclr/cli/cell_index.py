"""``napari-dynaclr cell-index``: VisCy's cell-index parquet from plates, tracks and experiment metadata."""

from __future__ import annotations

from pathlib import Path

from napari_dynaclr.cli.predict import perturbation_wells
from napari_dynaclr.errors import ConfigError


def add_parser(sub):
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
    from napari_dynaclr.core.collection import load_collection

    if args.collection is not None:
        if args.channels or args.markers:
            raise ConfigError("--channels/--markers describe the experiments; give them or --collection, not both")
        experiments = load_collection(args.collection, args.plate, args.tracks)
        inputs = {"collection": args.collection}
    else:
        from napari_dynaclr.core.experiment import ExperimentMetadata

        if not args.channels:
            raise ConfigError("give --collection, or --plate --tracks --channels --markers --perturbation-wells")
        meta = ExperimentMetadata(markers=args.markers, pixel_size=args.pixel_size,
                                  perturbation_wells=perturbation_wells(args.perturbation_wells),
                                  interval_minutes=args.interval_minutes, start_hpi=args.start_hpi)
        experiments = meta.experiments(args.plate, args.tracks, args.channels)
        inputs = {}
    for i, e in enumerate(experiments):
        inputs[f"plate {i}"], inputs[f"tracks {i}"] = e.data_path, e.tracks_path
    df = cell_index_from_plates(experiments, args.focus_channel, args.include_wells, args.exclude_fovs,
                                preprocess=not args.raw)
    write_cell_index(df, args.output, args.overwrite, inputs)
    print(f"wrote {args.output}: {len(df)} rows ({df['experiment'].nunique()} experiment(s), "
          f"{(df['well'] + '/' + df['fov']).nunique()} FOV(s))")
    return 0
