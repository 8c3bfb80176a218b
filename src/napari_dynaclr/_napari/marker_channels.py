"""A Bag-of-Channels table on its plate, marker by marker: the shown FOV has one image layer per plate channel
(named ``<FOV> <channel>``, metadata ``dynaclr_channel``) and the cells of every marker over them (one row per
cell and marker). Choosing a marker (the Explore tab's marker filter) shows that marker's channel and its cells:
the images of the other markers' channels are hidden, and so are the other markers' points (``Points.shown``);
"all markers" shows every channel and every cell again. A channel no marker uses is left as the user set it.

Which channel a marker was cut from: the store's ``uns["dynaclr"]["experiments"]`` (``channel``, ``marker``),
else a plate channel named as the marker (VisCy's own stores record no channel).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

ALL_MARKERS = "all markers"


def marker_channels(session) -> dict[str, str]:
    """marker → plate channel of the session's table (empty for a table without a ``marker`` column)."""
    table = session.table
    if table is None or "marker" not in table.columns:
        return {}
    out = {}
    uns = getattr(session.adata, "uns", None) or {}
    record = uns.get("dynaclr") if isinstance(uns.get("dynaclr"), Mapping) else {}
    for exp in (record.get("experiments") or {}).values():
        if isinstance(exp, Mapping) and exp.get("marker") is not None and exp.get("channel") is not None:
            out[str(exp["marker"])] = str(exp["channel"])
    channels = {str((layer.metadata or {}).get("dynaclr_channel")) for layer in session.image_layers}
    for marker in table["marker"].astype(str).unique():
        if marker not in out and marker in channels:
            out[marker] = marker
    return out


def show_marker(session, marker: str | None) -> None:
    """Show *marker*'s channel image and cells in the shown FOV (None or "all markers": every marker's)."""
    if session.table is None or "marker" not in session.table.columns:
        return
    every = marker in (None, ALL_MARKERS)
    channels = marker_channels(session)
    used = set(channels.values())
    for layer in session.image_layers:
        channel = (layer.metadata or {}).get("dynaclr_channel")
        if channel in used:
            layer.visible = every or channel == channels.get(str(marker))
    points = session.points_layer
    if points is not None and "marker" in points.features.columns and len(points.features) == len(points.data):
        points.shown = np.ones(len(points.data), bool) if every else \
            points.features["marker"].astype(str).to_numpy() == str(marker)
