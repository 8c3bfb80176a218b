"""Property-based tests: tracks tables and normalisation attributes never raise anything but our
documented errors, and cell selection always equals VisCy's rules."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_dynaclr.core.normalize import NormalizeSampled, StatsTable
from napari_dynaclr.core.tracks import REQUIRED_COLUMNS, read_tracks, select_fov_cells
from napari_dynaclr.errors import PlateError, TracksError

cell = st.one_of(
    st.integers(-300, 300),
    st.floats(-300, 300, allow_nan=False),
    st.just(float("nan")),
    st.just(float("inf")),
    st.sampled_from(["abc", "", "1.5", " 7 ", "nan", "-1"]),
)


@st.composite
def tracks_tables(draw):
    n = draw(st.integers(0, 12))
    cols = list(REQUIRED_COLUMNS)
    if draw(st.booleans()):
        cols.remove(draw(st.sampled_from(REQUIRED_COLUMNS)))
    if draw(st.booleans()):
        cols.append("z")
    if draw(st.booleans()):
        cols.append("area")
    clean = draw(st.booleans())
    data = {}
    for c in cols:
        if clean:
            data[c] = draw(st.lists(st.floats(-50, 300, allow_nan=False), min_size=n, max_size=n))
        else:
            data[c] = draw(st.lists(cell, min_size=n, max_size=n))
    if clean and n and "track_id" in data and "t" in data:
        data["track_id"] = list(range(n))
    return pd.DataFrame(data, columns=cols)


def viscy_select(csv, shape, patch):
    """VisCy's rules, written independently: whole table astype(int), strict border filter, CSV order."""
    df = pd.read_csv(csv)
    for c in ("parent_track_id", "parent_id"):
        df[c] = df[c].fillna(-1)  # our documented improvement over VisCy (which crashes)
    df = df.astype(int)
    _, _, _, h, w = shape
    hy, hx = patch[0] // 2, patch[1] // 2
    keep = df["y"].between(hy, h - hy, inclusive="neither") & df["x"].between(hx, w - hx, inclusive="neither")
    return df[keep]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=tracks_tables(), patch=st.sampled_from([(32, 32), (64, 48), (31, 33)]), n_t=st.integers(1, 400))
def test_tracks_selection_matches_viscy_or_raises_our_error(tmp_path, table, patch, n_t):
    csv = tmp_path / "tracks.csv"
    table.to_csv(csv, index=False)
    shape = (n_t, 1, 1, 200, 160)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NaN parents are read as -1 with a warning
            df = read_tracks(csv, "A/1/0")
            ours = select_fov_cells(df, "A/1/0", shape, patch)
    except TracksError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    ref = viscy_select(csv, shape, patch)
    assert ours.drop(columns=["fov_name"]).reset_index(drop=True).equals(ref.reset_index(drop=True).astype(np.int64))
    assert (ours["fov_name"] == "A/1/0").all()


class _FOV:
    def __init__(self, norm):
        self.name, self.normalization = "A/1/0", norm


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
                      st.text(max_size=4))
json_tree = st.recursive(json_leaf, lambda ch: st.dictionaries(
    st.sampled_from(["Phase3D", "fov_statistics", "timepoint_statistics", "mean", "std", "0", "1", "x"]), ch,
    max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(attrs=json_tree, level=st.sampled_from(["fov_statistics", "timepoint_statistics", "dataset_statistics"]),
       t=st.integers(0, 2))
def test_normalisation_attributes_never_crash(attrs, level, t):
    norm = NormalizeSampled(keys=("Phase3D",), level=level)
    try:
        table = StatsTable([_FOV(attrs if isinstance(attrs, dict) else None)], [norm])
        a, b = table.lookup(0, "Phase3D", np.array([0]), np.array([t]))
    except PlateError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert a.dtype == np.float32 and np.isfinite(a).all() and np.isfinite(b).all()
    block = attrs["Phase3D"][level]
    if level == "timepoint_statistics":
        block = block[str(t)]
    assert a[0] == np.float32(float(block["mean"])) and b[0] == np.float32(float(block["std"]))
