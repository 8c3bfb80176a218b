"""Compare two embedding stores cell by cell."""

from napari_dynaclr.verify._all import *  # noqa: F401,F403
from napari_dynaclr.verify._all import (  # noqa: F401
    HIST_EDGES, REQUIRED_KEYS, Contract, VerifyReport, compare_stores, find_cell, map_cell_values,
)
