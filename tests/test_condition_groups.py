"""The Conditions tab's groups (``_napari/condition_jobs``): every cell's condition as text and the conditions
present, computed per distinct value (fast on 10⁶ cells), equal to the per-cell texts ``astype(str)`` and the
well of ``fov_name`` give."""

import numpy as np
import pandas as pd
import pytest

from napari_dynaclr._napari import condition_jobs as cj


@pytest.fixture
def table():
    rng = np.random.default_rng(3)
    n = 500
    fovs = np.array(["A/1/0", "A/1/1", "A/2/0", "B/10/3"])
    return pd.DataFrame({
        "fov_name": pd.Categorical(fovs[rng.integers(0, 4, n)], categories=[*fovs, "C/9/9"]),  # an unused one
        "perturbation": np.where(rng.random(n) < 0.1, None, rng.choice(["mock", "ZIKV"], n)).astype(object),
        "annotation": pd.Categorical(np.where(rng.random(n) < 0.2, np.nan, rng.choice([1.0, 2.0], n))),
        "flag": rng.random(n) < 0.5,
    })


@pytest.mark.parametrize("column", [cj.WELL, "fov_name", "perturbation", "annotation", "flag"])
def test_conditions_are_the_texts_of_the_values(table, column):
    if column == cj.WELL:
        expected = pd.Series([f.rsplit("/", 1)[0] for f in table["fov_name"].astype(str)])
    else:
        expected = table[column].astype(str)
    got = cj.grouping_values(table, column)
    assert got.index.equals(table.index) and list(got) == list(expected)
    assert cj.grouping_choices(table, column) == sorted(set(expected))  # present ones only (not 'C/9/9')


def test_a_well_column_of_the_table_wins_over_the_fov_names(table):
    table = table.assign(well=pd.Categorical(np.where(np.arange(len(table)) % 2, "left", "right")))
    assert cj.grouping_choices(table, cj.WELL) == ["left", "right"]
