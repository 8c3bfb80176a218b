"""The contract a comparison is judged by: what "reproduced" means (VisCy's reproducibility contract by default).

Its own module, with nothing heavy imported: the Verify panel shows its defaults as it opens, before pandas is.
"""

from __future__ import annotations

import dataclasses

from napari_dynaclr.errors import DynaclrError


@dataclasses.dataclass
class Contract:
    """What "reproduced" means. Defaults = VisCy's reproducibility contract."""

    atol: float = 0.02
    rtol: float = 1e-2
    min_pearson: float = 0.999
    allow_missing: bool = False
    judge_reductions: bool = False
    require_same_order: bool = False
    check_obs: bool = True

    def __post_init__(self):
        for name in ("atol", "rtol"):
            v = float(getattr(self, name))
            if not v >= 0:
                raise DynaclrError(f"--{name} must be >= 0 (got {v})")
            setattr(self, name, v)
        self.min_pearson = float(self.min_pearson)
        if not -1.0 <= self.min_pearson <= 1.0:
            raise DynaclrError(f"--min-pearson must lie in [-1, 1] (got {self.min_pearson})")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
