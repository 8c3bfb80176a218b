"""The napari layer's cell-table model on its own (no napari, no Qt): selection modes and undo, neighbours as a
highlight of their own, columns and their signals, columns written elsewhere adopted for some rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_dynaclr._napari.cellmodel import cell_table
from napari_dynaclr._napari.cellmodel.model import CellModel
from napari_dynaclr.errors import ExploreError


@pytest.fixture
def model():
    obs = pd.DataFrame({"fov_name": ["A/1/0"] * 5 + ["A/1/1"] * 5, "track_id": [1] * 10, "t": list(range(5)) * 2,
                        "parent_track_id": -1, "y": 1.0, "x": 2.0})
    m = CellModel()
    m._take_table(cell_table(obs))
    return m


def _heard(signal):
    seen = []
    signal.connect(lambda *args: seen.append(args))
    return seen


def test_selection_modes_undo_and_the_selection_column(model):
    changed, cols = _heard(model.selection_changed), _heard(model.columns_set)
    assert model.select([1, 2]).tolist() == [1, 2]
    assert model.select([3], "add").tolist() == [1, 2, 3]
    assert model.select([2], "subtract").tolist() == [1, 3]
    assert np.flatnonzero(model.table["selection"].cat.codes == 1).tolist() == [1, 3]
    assert len(changed) == 3 and cols[-1] == (["selection"],)
    assert model.undo_selection() and model.selected.tolist() == [1, 2, 3]
    assert not model.undo_selection() and not model.can_undo_selection  # one step
    with pytest.raises(ExploreError, match="selection mode 'toggle'"):
        model.select([1], "toggle")


def test_neighbours_are_a_highlight_of_their_own(model):
    model.select([7, 8])
    heard = _heard(model.neighbours_changed)
    model.highlight(2)
    model.set_neighbours(2, [4, 0])
    assert len(heard) == 1 and model.selected.tolist() == [7, 8]  # the selection stays
    assert model.select_neighbours().tolist() == [0, 2, 4]
    assert model.undo_selection() and model.selected.tolist() == [7, 8]


def test_columns_and_colours(model):
    heard = _heard(model.columns_changed)
    model.color_by("t", "magma")
    model.add_columns({"t": np.arange(10)[::-1]})  # the colour column changed: the colours follow
    assert len(heard) == 1 and model.colors.shape == (10, 4)
    np.testing.assert_allclose(model.colors[0], model.colors_for("t")[1][0])
    with pytest.raises(ExploreError, match="no column 'nope'"):
        model.color_by("nope")


def test_the_colour_key_reuses_the_codes_the_colours_were_made_from(model):
    """A categorical column is factorised once per recolour (≈ 15 ms per 10⁶ track ids): the colours and the key
    share the codes; colours made any other way (a new table) are never paired with stale codes."""
    from napari_dynaclr._napari import plotting
    from napari_dynaclr._napari.cellmodel import categorical_codes

    model.color_by("fov_name")
    codes, cats = model.color_codes()
    expected_codes, expected_cats = categorical_codes(model.table["fov_name"])
    np.testing.assert_array_equal(codes, expected_codes)
    assert cats == expected_cats == ["A/1/0", "A/1/1"]
    key = plotting.color_key(model.table["fov_name"], colors=model.colors, codes=model.color_codes())
    fresh = plotting.color_key(model.table["fov_name"], colors=model.colors)
    assert key["labels"] == fresh["labels"] and np.array_equal(key["colors"], fresh["colors"])
    np.testing.assert_array_equal(key["colors"][1], model.colors[5])  # each swatch: its cells' colour
    model.add_columns({"fov_name": pd.Categorical(["A/1/1"] * 10)})  # the colour column changed: new codes
    assert model.color_codes()[1] == ["A/1/1"] and (model.color_codes()[0] == 0).all()
    model.color_by("t")
    assert model.color_codes() is None  # continuous
    model.color_by("track_id")
    model.colors = model.colors.copy()  # colours set some other way: the codes no longer describe them
    assert model.color_codes() is None


def test_columns_written_elsewhere_are_adopted_for_their_rows(model):
    rows = np.arange(5, 10)
    new = model.adopt_columns(rows, pd.DataFrame({"MANUAL_CLUSTER_ID": pd.Categorical([0, 1, 1, 0, 2]),
                                                  "score": np.linspace(0, 1, 5)}))
    assert new == ["MANUAL_CLUSTER_ID", "score"]
    col = model.table["MANUAL_CLUSTER_ID"]
    assert isinstance(col.dtype, pd.CategoricalDtype) and col.iloc[:5].isna().all()
    assert col.iloc[5:].astype(int).tolist() == [0, 1, 1, 0, 2]
    assert np.isnan(model.table["score"].iloc[:5]).all()
    # written again for other rows, with a new category: the first rows keep theirs
    model.adopt_columns(np.arange(0, 5), pd.DataFrame({"MANUAL_CLUSTER_ID": pd.Categorical([3] * 5)}))
    assert model.table["MANUAL_CLUSTER_ID"].astype(int).tolist() == [3] * 5 + [0, 1, 1, 0, 2]
