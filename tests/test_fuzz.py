"""Property-based tests: cell selection always equals VisCy's rules and normalisation statistics are read exactly
(strategies that build valid inputs, so every example reaches the comparison), and broken tracks tables or
normalisation attributes never raise anything but our documented errors.

``pytest tests/test_fuzz.py --hypothesis-show-statistics`` lists, per test, which way its examples went."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from napari_dynaclr.core.normalize import NormalizeSampled, StatsTable
from napari_dynaclr.core.tracks import REQUIRED_COLUMNS, read_tracks, select_fov_cells
from napari_dynaclr.errors import PlateError, TracksError

IMAGE = (200, 160)  # the FOV's height and width
PATCHES = st.sampled_from([(32, 32), (64, 48), (31, 33)])

# ------------------------------------------------------------------ tracks tables


@st.composite
def valid_tracks(draw):
    """A tracks table that must be read: every required column (in any order, maybe with z and an extra one),
    one row per (track_id, t), t inside the movie, parents -1 or missing (NaN), centroids as floats that may lie
    on either side of the border filter. Returns ``(table, n_t)``."""
    n_t = draw(st.integers(1, 30))
    keys = draw(st.lists(st.tuples(st.integers(0, 40), st.integers(0, n_t - 1)), max_size=30, unique=True))
    n = len(keys)
    height, width = IMAGE
    centre = st.floats(-5.0, 5.0 + max(IMAGE), allow_nan=False)
    data = {
        "track_id": [k[0] for k in keys], "t": [k[1] for k in keys],
        "id": draw(st.lists(st.integers(0, 10_000), min_size=n, max_size=n)),
        "parent_track_id": draw(st.lists(st.one_of(st.integers(-1, 40), st.just(np.nan)), min_size=n, max_size=n)),
        "parent_id": draw(st.lists(st.one_of(st.integers(-1, 10_000), st.just(np.nan)), min_size=n, max_size=n)),
        "y": draw(st.lists(centre, min_size=n, max_size=n)),
        "x": draw(st.lists(centre, min_size=n, max_size=n)),
    }
    if draw(st.booleans()):
        data["z"] = draw(st.lists(st.integers(0, 9), min_size=n, max_size=n))
    if draw(st.booleans()):
        data["area"] = draw(st.lists(st.floats(0, 500, allow_nan=False), min_size=n, max_size=n))
    cols = draw(st.permutations(list(data)))
    return pd.DataFrame({c: data[c] for c in cols}), n_t


cell = st.one_of(
    st.integers(-300, 300),
    st.floats(-300, 300, allow_nan=False),
    st.just(float("nan")),
    st.just(float("inf")),
    st.sampled_from(["abc", "", "1.5", " 7 ", "nan", "-1"]),
)


@st.composite
def broken_tracks(draw):
    """A valid table with up to three cells replaced by anything a CSV can hold, sometimes a required column
    missing, and a movie that may be shorter than the table's timepoints."""
    table, n_t = draw(valid_tracks())
    table = table.astype(object)
    for _ in range(draw(st.integers(0, 3)) if len(table) else 0):
        table.iat[draw(st.integers(0, len(table) - 1)), draw(st.integers(0, table.shape[1] - 1))] = draw(cell)
    if draw(st.integers(0, 3)) == 0:
        table = table.drop(columns=[draw(st.sampled_from(REQUIRED_COLUMNS))])
    return table, draw(st.sampled_from([n_t, max(1, n_t - 3), n_t + 5]))


#: what a refusal of a tracks table says, for the statistics' events
REFUSALS = ("lacks required column", "non-numeric value", "missing/NaN value", "infinite value",
            "share a (track_id, t) pair", "tracks refer to t=", "is empty", "cannot be parsed")


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


def _select(csv, n_t, patch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NaN parents are read as -1 with a warning
        return select_fov_cells(read_tracks(csv, "A/1/0"), "A/1/0", (n_t, 1, 1, *IMAGE), patch)


def _assert_is_viscys(ours, csv, n_t, patch) -> None:
    ref = viscy_select(csv, (n_t, 1, 1, *IMAGE), patch)
    assert ours.drop(columns=["fov_name"]).reset_index(drop=True).equals(ref.reset_index(drop=True).astype(np.int64))
    assert (ours["fov_name"] == "A/1/0").all()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tracks=valid_tracks(), patch=PATCHES)
def test_tracks_selection_matches_viscy(tmp_path, tracks, patch):
    table, n_t = tracks
    csv = tmp_path / "tracks.csv"
    table.to_csv(csv, index=False)
    ours = _select(csv, n_t, patch)
    event("no rows" if table.empty else "all rows kept" if len(ours) == len(table)
          else "no row kept" if ours.empty else "some rows dropped by the border filter")
    _assert_is_viscys(ours, csv, n_t, patch)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tracks=broken_tracks(), patch=PATCHES)
def test_broken_tracks_raise_our_error_or_read_as_viscy(tmp_path, tracks, patch):
    table, n_t = tracks
    csv = tmp_path / "tracks.csv"
    table.to_csv(csv, index=False)
    try:
        ours = _select(csv, n_t, patch)
    except TracksError as exc:
        event("refused: " + next((r for r in REFUSALS if r in str(exc)), str(exc)[:60]))
        assert str(exc) and "\n" not in str(exc)
        return
    event("read: compared with VisCy's selection")
    _assert_is_viscys(ours, csv, n_t, patch)


# ------------------------------------------------------------------ normalisation attributes


class _FOV:
    def __init__(self, norm):
        self.name, self.normalization = "A/1/0", norm


number = st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.integers(-1000, 1000))
#: anything else a JSON attribute can hold, numbers beyond float32 (and any float) included
junk = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.integers(2**1100, 2**1100 + 1),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4))
PAIRS = [("mean", "std"), ("median", "iqr")]


def statistics(value=number):
    """VisCy's ``normalization`` attributes of a FOV (``viscy preprocess``): per channel, the fov, dataset and
    per-timepoint statistics; *value*: what each statistic holds."""
    block = st.fixed_dictionaries({name: value for pair in PAIRS for name in pair})
    channel = st.fixed_dictionaries({
        "fov_statistics": block, "dataset_statistics": block,
        "timepoint_statistics": st.dictionaries(st.integers(0, 5).map(str), block, min_size=1, max_size=4),
    })
    return st.fixed_dictionaries({"Phase3D": channel}, optional={"RFP": channel})


LEVELS = st.sampled_from(["fov_statistics", "timepoint_statistics", "dataset_statistics"])


@settings(max_examples=300, deadline=None)
@given(attrs=statistics(), level=LEVELS, pair=st.sampled_from(PAIRS), data=st.data())
def test_normalisation_statistics_are_read_exactly(attrs, level, pair, data):
    block = attrs["Phase3D"][level]
    t = 0
    if level == "timepoint_statistics":
        t = int(data.draw(st.sampled_from(sorted(block)), label="t"))
        block = block[str(t)]
    event(level)
    norm = NormalizeSampled(keys=("Phase3D",), level=level, subtrahend=pair[0], divisor=pair[1])
    a, b = StatsTable([_FOV(attrs)], [norm]).lookup(0, "Phase3D", np.array([0, 0]), np.array([t, t]))
    assert a.dtype == b.dtype == np.float32
    assert (a == np.float32(float(block[pair[0]]))).all() and (b == np.float32(float(block[pair[1]]))).all()


json_tree = st.recursive(junk, lambda ch: st.dictionaries(
    st.sampled_from(["Phase3D", "fov_statistics", "timepoint_statistics", "mean", "std", "0", "1", "x"]), ch,
    max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(attrs=st.one_of(statistics(value=st.one_of(number, junk)), json_tree), level=LEVELS,
       t=st.integers(0, 5))
def test_broken_normalisation_attributes_raise_our_error_or_read_exactly(attrs, level, t):
    norm = NormalizeSampled(keys=("Phase3D",), level=level)
    try:
        table = StatsTable([_FOV(attrs if isinstance(attrs, dict) else None)], [norm])
        a, b = table.lookup(0, "Phase3D", np.array([0]), np.array([t]))
    except PlateError as exc:
        event("refused")
        assert str(exc) and "\n" not in str(exc)
        return
    event("read: values checked")
    assert a.dtype == np.float32 and np.isfinite(a).all() and np.isfinite(b).all()
    block = attrs["Phase3D"][level]
    if level == "timepoint_statistics":
        block = block[str(t)]
    assert a[0] == np.float32(float(block["mean"])) and b[0] == np.float32(float(block["std"]))
