"""Scratch folders of the benchmarks: made under the system's temporary folder and removed when the benchmark ends
(normally or by an exception), so that repeated runs do not fill the disk (stores of 10⁶ cells, plates,
checkpoints of 100+ MB)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path


def scratch_dir(prefix: str) -> Path:
    """A new empty folder, deleted with everything in it when the process exits."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
