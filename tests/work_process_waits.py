"""Waiting on the plugin's work processes in tests: whether a process lives, whether it is in its UMAP, and a
poll of such a condition (no Qt signal tells a test that another process died or started its UMAP)."""

from __future__ import annotations

import os
import time


def alive(pid: int) -> bool:
    """The process *pid* runs (a zombie is dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def loaded(pid: int, library: str) -> bool:
    """The process has mapped *library* (e.g. ``libtorch``)."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return library in f.read()
    except OSError:
        return False


def in_umap(pid: int) -> bool:
    """The process has loaded numba (llvmlite): the work process imports it only to run UMAP."""
    return loaded(pid, "llvmlite")


def poll(condition, tries: int = 2400, every: float = 0.05) -> bool:
    """Wait until *condition()* holds (a safety net of minutes, not a time limit)."""
    for _ in range(tries):
        if condition():
            return True
        time.sleep(every)
    return condition()
