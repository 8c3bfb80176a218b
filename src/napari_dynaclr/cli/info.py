"""``napari-dynaclr info``: the encoder config a checkpoint's weights imply."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub):
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
