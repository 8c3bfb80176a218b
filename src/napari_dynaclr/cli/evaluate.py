"""``napari-dynaclr evaluate``: VisCy's evaluations of a store (smoothness, linear classifier; MMD between
conditions and DTW pseudotime in :mod:`napari_dynaclr.cli.evaluate_conditions`)."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

from napari_dynaclr.cli import evaluate_conditions
from napari_dynaclr.cli.progress import progress_bar
from napari_dynaclr.cli.reports import OVERWRITE_HELP, check_report, write_report
from napari_dynaclr.errors import ConfigError


def add_parser(sub):
    p = sub.add_parser(
        "evaluate",
        help="evaluate a store as VisCy does: smoothness, linear classifier, MMD between conditions, pseudotime",
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
    s.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
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
    c.add_argument("--overwrite", action="store_true",
                   help="replace an existing --apply store, or a --json file that napari-dynaclr did not write")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_evaluate_classifier)
    evaluate_conditions.add_parsers(esub)


def _quiet_obs_names() -> None:
    # VisCy's stores repeat obs names per batch; nothing here uses them
    warnings.filterwarnings("ignore", message=".*Observation names are not unique.*")


def cmd_evaluate_smoothness(args) -> int:
    from napari_dynaclr.core.store import read_store
    from napari_dynaclr.evaluate.matrix import embedding_matrix
    from napari_dynaclr.evaluate.smoothness import STAT_NAMES, STEPS, compute_smoothness, smoothness_by_group

    inputs = {"store": args.store}
    check_report(args.json, inputs, args.overwrite)
    _quiet_obs_names()
    adata = read_store(args.store)
    X = embedding_matrix(adata.X, str(args.store))
    meta = {"store": str(args.store), "metric": args.metric, "order": args.order}
    if args.group_by is None:
        bar = progress_bar(len(STEPS), "smoothness", args.quiet, leave=False)

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
        for note in res.notes:  # rows left out (NaN/Inf embeddings, no track)
            warnings.warn(note, stacklevel=2)
    else:
        if args.group_by not in adata.obs.columns:
            raise ConfigError(f"--group-by {args.group_by!r}: {args.store} has no obs column of that name "
                              f"(columns: {', '.join(map(str, adata.obs.columns))})")
        n_groups = int(adata.obs[args.group_by].nunique(dropna=False))
        bar = progress_bar(n_groups, "smoothness", args.quiet, leave=False)
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
    write_report(args.json, payload, "evaluate smoothness", inputs, args.overwrite)
    for line in lines:
        print(line)
    return 0


def cmd_evaluate_classifier(args) -> int:
    from napari_dynaclr.core.output import OutputGuard
    from napari_dynaclr.core.store import read_store, write_store
    from napari_dynaclr.evaluate.annotations import join_annotations, read_annotations
    from napari_dynaclr.evaluate.classifier import apply_predictions, prediction_keys, track_groups, train_classifier
    from napari_dynaclr.evaluate.matrix import embedding_matrix

    inputs = {"store": args.store, "annotations": args.annotations}
    check_report(args.json, inputs, args.overwrite)
    if args.apply is not None and os.path.realpath(args.apply) == os.path.realpath(args.json):
        raise ConfigError("--apply and --json name the same path")
    if args.apply is not None:
        prediction_keys(args.task)  # a name the store cannot hold is refused before any work
    annotations = read_annotations(args.annotations)
    _quiet_obs_names()
    guard = OutputGuard(args.apply, args.overwrite, inputs) if args.apply is not None else contextlib.nullcontext()
    with guard:
        bar = progress_bar(4 if args.apply is not None else 3, "classifier", args.quiet, leave=False)
        try:
            adata = read_store(args.store)
            bar and bar.update(1)
            labels = join_annotations(adata.obs, annotations, args.task)
            bar and bar.update(1)
            groups = track_groups(adata.obs) if args.split == "track" else None
            result = train_classifier(embedding_matrix(adata.X, str(args.store)), labels.to_numpy(), groups=groups,
                                      split=args.split, task=args.task, cross_validate=True)
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
    write_report(args.json, payload, "evaluate classifier", inputs, args.overwrite)
    m = result.metrics
    shown = [k for k in ("train_accuracy", "val_accuracy", "val_weighted_f1", "val_auroc") if k in m]
    print(f"{args.task}: {result.n_samples} labelled cells, split {result.split}, solver {result.solver}; "
          + ", ".join(f"{k} {m[k]:.4g}" for k in shown))
    cv = result.cross_validation
    if cv is not None:
        print(f"cross-validated accuracy {cv.mean:.4g} ± {cv.std:.2g} ({cv.n_splits} "
              f"{'track-grouped ' if cv.grouped else ''}folds)")
    if result.warning:
        warnings.warn(result.warning, stacklevel=2)
    if args.apply is not None:
        print(f"wrote {args.apply}: obs predicted_{args.task}, obsm predicted_{args.task}_proba")
    return 0
