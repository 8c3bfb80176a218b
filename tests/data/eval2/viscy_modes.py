"""Make ``expected_modes.json.gz``: VisCy's own ``run_mmd_pooled`` and ``run_mmd_combined`` on the cases of
``tests/mmd_modes_data.py``. Not a test; run by hand where VisCy's source (mehta-lab/VisCy at 4b62365c) and
statsmodels are at hand:

    PYTHONPATH=src:tests:STATSMODELS_DIR python tests/data/eval2/viscy_modes.py VISCY_CHECKOUT

VisCy's package ``__init__`` files import torch and its models; the two modules needed here do not, so the packages
are entered by path without running those files.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import sys
import tempfile
import types
from pathlib import Path


def _enter(name: str, folder: Path) -> None:
    module = types.ModuleType(name)
    module.__path__ = [str(folder)]
    sys.modules[name] = module


def main(viscy: Path) -> None:
    utils = viscy / "packages" / "viscy-utils" / "src" / "viscy_utils"
    dynaclr = viscy / "applications" / "dynaclr" / "src" / "dynaclr"
    _enter("viscy_utils", utils)
    _enter("viscy_utils.evaluation", utils / "evaluation")
    _enter("dynaclr", dynaclr)
    _enter("dynaclr.evaluation", dynaclr / "evaluation")
    from dynaclr.evaluation.mmd.compute_mmd import run_mmd_combined, run_mmd_pooled
    from dynaclr.evaluation.mmd.config import MMDCombinedConfig, MMDPooledConfig

    from mmd_modes_data import CASES, EXPECTED_MODES, write_stores

    out = {"made_by": "VisCy 4b62365c dynaclr.evaluation.mmd.compute_mmd run_mmd_pooled / run_mmd_combined, "
                      "statsmodels 0.15.0"}
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(write_stores(Path(tmp)))
        for name, (mode, cfg) in CASES.items():
            if mode == "pooled":
                df = run_mmd_pooled(MMDPooledConfig(output_dir="o", **cfg))
            else:
                df = run_mmd_combined(MMDCombinedConfig(output_dir="o", **cfg))
            rows = df.to_dict(orient="records")
            out[name] = [{k: (None if isinstance(v, float) and math.isnan(v) else
                              v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in rows]
            print(name, len(rows), "rows", file=sys.stderr)
    with gzip.open(EXPECTED_MODES, "wt") as fh:
        json.dump(out, fh, indent=0)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
