"""``napari-dynaclr verify``: compare a prediction store with a reference store."""

from __future__ import annotations

from pathlib import Path

from napari_dynaclr.cli.reports import OVERWRITE_HELP, check_report, write_report


def add_parser(sub):
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
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--worst", type=int, default=5, help="how many worst cells to list (default 5)")
    p.set_defaults(func=cmd_verify)


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


def cmd_verify(args) -> int:
    """``napari-dynaclr verify``: print the report; 0 pass, 1 fail; raise StoreError (→ 2) on bad input."""
    from napari_dynaclr.verify import compare_stores, format_report

    contract = contract_from_args(args)
    worst = int(getattr(args, "worst", 5) or 0)
    json_path, overwrite = getattr(args, "json", None), bool(getattr(args, "overwrite", False))
    inputs = {"prediction": args.prediction, "reference": args.reference}
    if json_path is not None:
        check_report(json_path, inputs, overwrite)  # before the comparison: never into a store it compares
    report = compare_stores(args.prediction, args.reference, contract)
    print(format_report(report, worst=worst))
    if json_path is not None:
        write_report(Path(json_path), report.to_dict(worst=max(worst, 20)), "verify", inputs, overwrite,
                     said="report written to {path}")
    return 0 if report.passed else 1
