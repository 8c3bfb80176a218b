"""Progress bars on a terminal (nothing when the output is not a terminal or ``--quiet``)."""

from __future__ import annotations

import sys


def progress_bar(total: int, desc: str, quiet: bool, unit: str = "it", leave: bool = True):
    """A tqdm bar of *total* steps on stderr when it is a terminal, else None."""
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=leave)


class BatchProgress:
    """An ``on_batch`` callback for a prediction: a bar of cells, made at the first batch (when the number of
    cells is known). Call :meth:`close` at the end, whatever happened."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.started = False

    def __call__(self, res) -> None:
        if not self.started:
            self.started = True
            self.bar = progress_bar(res.n_cells, "predict", self.quiet, unit="cell")
        if self.bar is not None:
            self.bar.update(res.stop - res.start)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
