"""DTW pseudotime: VisCy's numbers on the conformance kit (library and ``evaluate pseudotime``), the batched DTW
against plain loops written from dtaidistance's algorithm, and bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from eval2_data import ANNOTATIONS, CONFIGS, anndata, expected, write_store
from napari_dynaclr.cli import main
from napari_dynaclr.evaluate.annotations import read_annotations
from napari_dynaclr.evaluate.pseudotime import PseudotimeConfig, load_pseudotime_config, run_pseudotime
from napari_dynaclr.evaluate.pseudotime import dtw as D

COSTS = ("dtw_cost", "length_normalized_cost", "path_skew")


def _config(**changes) -> dict:
    raw = yaml.safe_load((CONFIGS / "pseudotime.yaml").read_text())
    raw["dtw_align_tracks"]["subsequence"] = [True, False]  # the kit's global mode too (raw.global_psi_default)
    for section, values in changes.items():
        if isinstance(values, dict):
            raw[section] = {**raw.get(section, {}), **values}
        else:
            raw[section] = values
    return raw


def _close(got, want, rel, path):
    if want is None:
        assert got is None, path
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=rel, abs=1e-12), path
    else:
        assert got == want, path


def compare(got, want, path="", flavor="raw"):
    """The kit's tolerances: discrete outputs exact; raw costs and template rel 1e-9; the PCA flavour's costs rel
    1e-6 and its template up to the sign of each component (scikit-learn's choice); the rest rel 1e-9."""
    if isinstance(want, dict):
        assert isinstance(got, dict), path
        for key, value in want.items():
            assert key in got, f"{path}/{key}"
            compare(got[key], value, f"{path}/{key}", key if key in ("raw", "pca") else flavor)
    elif isinstance(want, list) and path.endswith("/template") and flavor == "pca":
        g, w = np.asarray(got), np.asarray(want)
        signs = np.sign(np.sum(g * w, axis=0))
        np.testing.assert_allclose(g * signs, w, rtol=1e-6, atol=1e-9, err_msg=path)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            compare(g, w, f"{path}[{i}]", flavor)
    else:
        rel = 1e-6 if flavor == "pca" and (path.rsplit("/", 1)[-1] in COSTS or "explained" in path) else 1e-9
        _close(got, want, rel, path)


@pytest.fixture(scope="module")
def kit_result():
    adata = anndata()
    cfg = PseudotimeConfig.model_validate(_config())
    return run_pseudotime(np.asarray(adata.X), adata.obs, read_annotations(ANNOTATIONS), cfg)


def test_library_gives_viscys_pseudotime(kit_result):
    got = json.loads(json.dumps(kit_result.to_dict()))
    want = expected()["pseudotime"]
    compare(got, want)
    assert got["pca"]["global_psi_default"]["per_track"]  # a mode the kit did not record is there too
    assert len(got["raw"]["subsequence"]["per_frame"]) == 720


def test_paths_regions_and_groups_are_exact(kit_result):
    want = expected()["pseudotime"]
    for flavor in ("raw", "pca"):
        res = kit_result.flavors[flavor].modes["subsequence"]
        exp = want[flavor]["subsequence"]
        assert [a.warping_path.tolist() for a in res.alignments] == [t["warping_path"] for t in exp["per_track"]]
        assert res.per_frame["alignment_region"].tolist() == [r["alignment_region"] for r in exp["per_frame"]]
        assert res.per_frame["pseudotime"].tolist() == [r["pseudotime"] for r in exp["per_frame"]]
        assert res.response_groups["response_group"].tolist() == [r["response_group"] for r in exp["response_groups"]]


def _run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_writes_the_kits_layout(tmp_path, capsys):
    store = write_store(tmp_path / "store.zarr")
    cfg = tmp_path / "pt.yaml"
    cfg.write_text(yaml.safe_dump(_config()))
    out = tmp_path / "pt.json"
    code, stdout, err = _run_cli(capsys, "evaluate", "pseudotime", store, "--annotations", ANNOTATIONS, "-c", cfg,
                                 "--json", out, "--quiet")
    assert code == 0, err
    compare(json.loads(out.read_text()), expected()["pseudotime"])
    assert "onsets: 9 tracks" in stdout and "raw: template of 9 frames x 768 from 9 tracks" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dynaclr-manifest.json", "pt.json", "pt.yaml",
                                                          "store.zarr"]


def test_rerun_replaces_its_own_unchanged_report_only(tmp_path, capsys):
    """--json of an earlier run is replaced; the same report edited by the user (its mark kept) or a user's file
    of that name is refused without --overwrite (exit 2, left as it is); --overwrite replaces it."""
    import os

    store = write_store(tmp_path / "store.zarr")
    cfg = tmp_path / "pt.yaml"
    cfg.write_text(yaml.safe_dump(_config(build_template={"flavors": {"raw": None}},
                                          dtw_align_tracks={"subsequence": [True]})))
    out = tmp_path / "pt.json"
    argv = ["evaluate", "pseudotime", store, "--annotations", ANNOTATIONS, "-c", cfg, "--json", out, "--quiet"]
    assert _run_cli(capsys, *argv)[0] == 0
    first = os.stat(out).st_ino
    code, _, err = _run_cli(capsys, *argv)
    assert code == 0, err
    assert os.stat(out).st_ino != first  # written again (a new file swapped in), without --overwrite
    ours = out.read_text()
    edited = ours.replace('"fov_name": "B/1/0"', '"fov_name": "B/1/0 (checked)"', 1)
    assert edited != ours and json.loads(edited)["written_by"].startswith("napari-dynaclr")
    for theirs in (edited, '{"my": "notes"}\n'):
        out.write_text(theirs)
        code, _, err = _run_cli(capsys, *argv)
        assert code == 2 and "pt.json already exists; pass --overwrite to replace it" in err, err
        assert out.read_text() == theirs
    assert _run_cli(capsys, *argv, "--overwrite")[0] == 0 and out.read_text() == ours


def test_kit_config_file_loads_unchanged():
    cfg = load_pseudotime_config(CONFIGS / "pseudotime.yaml")
    assert cfg.build_template.flavors == {"raw": None, "pca": 8} and cfg.dtw_align_tracks.modes == [True]


# --- the batched DTW against plain loops (dtaidistance's algorithm, one pair at a time) ---------------------------

def _ref_acc(a, b, penalty=0.0, psi=0, free_start=False):
    r, c = len(a), len(b)
    acc = np.full((r + 1, c + 1), np.inf)
    acc[0, : (c + 1 if free_start else psi + 1)] = 0
    acc[: psi + 1, 0] = 0
    for i in range(r):
        for j in range(c):
            d = np.sum((a[i] - b[j]) ** 2)
            acc[i + 1, j + 1] = d + min(acc[i, j], acc[i, j + 1] + penalty, acc[i + 1, j] + penalty)
    return acc


def _ref_path(paths, i, j, penalty=0.0):
    p = [(i - 1, j - 1)] if paths[i, j] != -1 else []
    while i > 0 and j > 0:
        k = int(np.argmin([paths[i - 1, j - 1], paths[i - 1, j] + penalty, paths[i, j - 1] + penalty]))
        i, j = (i - 1, j - 1) if k == 0 else (i - 1, j) if k == 1 else (i, j - 1)
        if paths[i, j] != -1:
            p.append((i - 1, j - 1))
    p.pop()
    return np.array(p[::-1]).reshape(-1, 2)


def _ref_subsequence(template, track):
    T = len(template)
    acc = _ref_acc(template, track, D.SUBSEQUENCE_PENALTY, free_start=True)
    matching = np.sqrt(acc[T, 1:]) / T
    masked = matching.copy()
    maxv = np.ceil(np.max(matching) + 1)
    while True:
        best = int(np.argmin(masked))
        if np.isinf(masked[best]) or masked[best] == maxv:
            return None
        path = _ref_path(acc, T, best + 1, D.SUBSEQUENCE_PENALTY)
        if best - path[0][1] + 1 < 2:
            masked[best] = maxv
            continue
        return path, float(matching[best])


def _ref_global(template, track, psi):
    T, c = len(template), len(track)
    paths = np.sqrt(_ref_acc(template, track, psi=psi))
    if psi:
        vr = paths[T:max(0, T - psi - 1):-1, c]
        vc = paths[T, c:max(0, c - psi - 1):-1]
        mir, mic = int(np.argmin(vr)), int(np.argmin(vc))
        if vr[mir] < vc[mic]:
            paths[T:T - mir:-1, c] = -1
        else:
            paths[T, c:c - mic:-1] = -1
    path = _ref_path(paths, T, c)
    return path, float(paths[path[-1, 0], path[-1, 1]])


def _sequences(draw_seed, n, dim, quantised):
    rng = np.random.default_rng(draw_seed)
    seqs = [rng.standard_normal((int(k), dim)) for k in rng.integers(2, 14, size=n)]
    return [np.round(s, 0) if quantised else s for s in seqs]  # rounding makes exact ties common


def assert_alignments_equal_loops(template, tracks):
    """The subsequence and global alignments and the warping paths of *tracks* against *template* are the plain
    loops' (paths, costs, no match)."""
    for got, track in zip(D.subsequence_match(template, tracks), tracks):
        want = _ref_subsequence(template, track)
        assert (got is None) == (want is None)
        if got is not None:
            assert np.array_equal(got[0], want[0]) and got[1] == want[1]
    psis = [min(len(template) // 2, len(t) - 1, len(template) - 1) for t in tracks]
    for (path, cost), track, psi in zip(D.global_match(template, tracks, psis), tracks, psis):
        ref_path, ref_cost = _ref_global(template, track, psi)
        assert np.array_equal(path, ref_path) and cost == ref_cost
    for path, track in zip(D.warping_paths_batch(template, tracks), tracks):
        acc = np.sqrt(_ref_acc(template, track))
        assert np.array_equal(path, _ref_path(acc, len(template), len(track)))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 5), st.integers(2, 9), st.booleans())
def test_batched_dtw_equals_plain_loops(seed, dim, t_len, quantised):
    template, *tracks = _sequences(seed, 12, dim, quantised)
    template = template[:t_len] if len(template) >= t_len else template
    assert_alignments_equal_loops(template, tracks)
    sums = D.distance_sums([0, 3, 5], tracks)
    for s, i in zip(sums, [0, 3, 5]):
        total = 0.0
        for j, other in enumerate(tracks):
            if j != i:
                total += float(np.sqrt(_ref_acc(tracks[i], other)[-1, -1]))
        assert s == total
    assert D.medoid([0, 3, 5], tracks) == int(np.argmin(sums))


# --- bad input ---------------------------------------------------------------------------------------------------

def _short_track(adata):
    """Track 99 of B/1/0, two frames: one along the raw template's mean direction, one opposite to it (after the
    z-score); every template position is then closest to the second frame, so no segment of two frames wins."""
    import anndata as ad
    import pandas as pd

    from napari_dynaclr.evaluate.pseudotime import align_tracks, build_template, tracking_table

    X = np.asarray(adata.X, dtype=np.float64)
    table = tracking_table(adata.obs, read_annotations(ANNOTATIONS), ["infection_state"])
    template = build_template(X, adata.obs, align_tracks(table, 30.0, fov_pattern="B/1"), "d", None, crop_window=4)
    mean, std = X.mean(axis=0), X.std(axis=0)
    direction = template.template.mean(axis=0)
    obs = adata.obs.iloc[[0, 1]].copy()
    obs["fov_name"] = pd.Categorical(["B/1/0"] * 2, categories=adata.obs["fov_name"].cat.categories)
    obs["track_id"] = 99
    obs.index = ["short0", "short1"]
    frames = np.stack([mean - 50 * std * direction, mean + 50 * std * direction]).astype(np.float32)
    extra = ad.AnnData(X=frames, obs=obs, obsm={"X_projections": np.zeros((2, 32), np.float32)})
    return ad.concat([adata, extra], merge="same")


def _cases(tmp_path):
    def store(name, change):
        adata = anndata()
        adata = change(adata) or adata
        return write_store(tmp_path / f"{name}.zarr", adata)

    def config(name, **changes):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(_config(**changes)))
        return path

    no_infected = tmp_path / "none_infected.csv"
    no_infected.write_text(ANNOTATIONS.read_text().replace(",infected\n", ",uninfected\n"))
    wrong_col = tmp_path / "wrong_col.csv"
    wrong_col.write_text(ANNOTATIONS.read_text().replace("infection_state", "state", 1))
    kit = write_store(tmp_path / "kit.zarr")
    ok = config("ok")
    return [
        ("no track_id", [store("no_tid", lambda a: a.obs.drop(columns="track_id", inplace=True)), ok, ANNOTATIONS],
         "obs lacks column\\(s\\) track_id"),
        ("no onset column", [kit, ok, wrong_col], "has no column 'infection_state'"),
        ("no infected cell", [kit, ok, no_infected],
         "no track has a cell with infection_state == 'infected'.*FOVs matching 'B/1'"),
        ("no annotations", [kit, ok, None], "no annotation CSV was given"),
        ("track shorter than the template",
         [store("short", _short_track), config("short", dtw_align_tracks={"min_track_timepoints": 2}), ANNOTATIONS],
         "track B/1/0 99 \\(2 frames\\) matches no segment of two frames of the 9-frame template"),
        ("one-frame tracks", [kit, config("one", dtw_align_tracks={"min_track_timepoints": 1}), ANNOTATIONS],
         "dtw_align_tracks.min_track_timepoints: expected a value >= 2, got 1"),
        ("unknown key", [kit, config("key", build_template={"flavours": {"raw": None}}), ANNOTATIONS],
         "unknown key 'build_template.flavours'"),
        ("no prediction column", [kit, config("pred", align_tracks={"source": "prediction"}), ANNOTATIONS],
         "reads obs column 'predicted_infection_state'.*--apply"),
        ("unknown embedding", [kit, config("emb", embedding_key="X_pca"), ANNOTATIONS], "embedding_key 'X_pca'"),
    ]


def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    for name, (store, cfg, csv), message in _cases(tmp_path):
        before = sorted(p.name for p in tmp_path.iterdir())
        argv = ["evaluate", "pseudotime", store, "-c", cfg, "--json", tmp_path / "out.json"]
        code, _, err = _run_cli(capsys, *argv, *(["--annotations", csv] if csv is not None else []))
        assert code == 2, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("napari-dynaclr: error:"), (name, err)
        assert re.search(message, lines[0]), (name, lines[0])
        assert sorted(p.name for p in tmp_path.iterdir()) == before, name


def test_json_into_the_store_is_refused(tmp_path, capsys):
    store = write_store(tmp_path / "kit.zarr")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_config()))
    code, _, err = _run_cli(capsys, "evaluate", "pseudotime", store, "--annotations", ANNOTATIONS, "-c", cfg,
                            "--json", store / "pt.json")
    assert code == 2 and "lies inside the input store" in err and not (store / "pt.json").exists()


def test_compiled_kernels_give_numpys_bits(monkeypatch):
    """The numba frame costs and whole distances (large inputs) equal the numpy path bit for bit."""
    from napari_dynaclr.evaluate.pseudotime import kernels

    rng = np.random.default_rng(11)
    for dim in (5, 20, 130):
        A, B = rng.standard_normal((64, dim)), rng.standard_normal((4000, dim))
        assert np.array_equal(kernels.frame_costs(A, B), kernels.frame_costs_numpy(A, B))
    seqs = [rng.standard_normal((int(n), 12)) for n in rng.integers(5, 21, 300)]
    fast = D.distance_sums(list(range(0, 300, 6)), seqs)
    monkeypatch.setattr(kernels, "_SMALL", 1 << 62)  # numpy only
    assert np.array_equal(fast, D.distance_sums(list(range(0, 300, 6)), seqs))


def test_zscore_statistics_are_numpys():
    from napari_dynaclr.evaluate.pseudotime.template import zscore_params

    X = np.random.default_rng(2).standard_normal((20_000, 33)).astype(np.float32) * 3 + 1
    X[:, 5] = 7.0  # a constant column: std 1
    mean, std = zscore_params(X)
    full = X.astype(np.float64)
    assert np.array_equal(mean, full.mean(axis=0))
    assert np.array_equal(std, np.where(full.std(axis=0) < 1e-10, 1.0, full.std(axis=0))) and std[5] == 1.0


def test_progress_and_cancel():
    from napari_dynaclr.errors import Cancelled

    adata = anndata()
    cfg = PseudotimeConfig.model_validate(_config())
    steps = []
    run_pseudotime(np.asarray(adata.X), adata.obs, read_annotations(ANNOTATIONS), cfg,
                   progress=lambda done, total, what: steps.append((done, total, what)))
    assert [s[0] for s in steps] == list(range(1, 7)) and steps[0] == (1, 6, "template raw")
    with pytest.raises(Cancelled):
        run_pseudotime(np.asarray(adata.X), adata.obs, read_annotations(ANNOTATIONS), cfg, cancel=lambda: True)
