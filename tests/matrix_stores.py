"""The store kinds of the napari matrix test (issue 21, item 5): each built in a temporary folder from the
conformance cases in tests/data, as a user makes it (the CLI's ``predict -c … [--output …]``, a copy of
VisCy's own store, a folder moved with its plate)."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from conftest import DATA

#: store kind -> (conformance case, how the store is made)
KINDS = {
    "classic2d": ("dev2d", "beside"),
    "classic3d": ("dev3d2ch", "beside"),
    "boc2d_mip": ("boc2d_mip", "beside"),
    "boc3d": ("boc3d", "beside"),
    "viscy": ("dev2d", "viscy"),
    "away_classic": ("dev2d", "away"),
    "away_boc": ("boc2d_mip", "away"),
    "moved": ("dev2d", "moved"),
}

#: what a case's folder holds besides the plate (copied when present)
CASE_FILES = ("tracks", "predict.yml", "cell_index.parquet", "collection.yml")


@dataclasses.dataclass
class MatrixStore:
    kind: str
    case: str
    path: Path  # the store to open
    reference: Path  # VisCy's reference store of the case (tests/data, read only)
    n_cells: int


def copy_case(case: str, dst: Path, ckpt: Path) -> Path:
    """A writable copy of the case's inputs (plate, tracks, predict.yml, cell index, collection) with the
    rebuilt checkpoint as the predict.yml's ``model.ckpt``."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(DATA / case / "plate.zarr", dst / "plate.zarr")
    for name in CASE_FILES:
        src = DATA / case / name
        if src.is_dir():
            shutil.copytree(src, dst / name)
        elif src.exists():
            shutil.copy(src, dst / name)
    shutil.copy(ckpt, dst / "model.ckpt")
    for p in dst.rglob("*"):
        p.chmod(p.stat().st_mode | 0o200)
    return dst


def predict(yml: Path, output: str | Path) -> Path:
    """``napari-dynaclr predict -c <yml> --output <output> --device cpu`` (in this process); the store."""
    from napari_dynaclr.cli import main

    code = main(["predict", "-c", str(yml), "--output", str(output), "--device", "cpu", "--quiet"])
    assert code == 0, f"predict -c {yml} --output {output} exited {code}"
    return Path(os.path.abspath(output))


def build(kind: str, root: Path, ckpt: Path) -> MatrixStore:
    """Make the store of *kind* under *root* (the working folder is *root* while the CLI runs)."""
    import anndata as ad

    case, how = KINDS[kind]
    old_cwd = Path.cwd()
    os.chdir(root)
    try:
        if how == "beside":  # the predict.yml's folder, VisCy's default place
            folder = copy_case(case, root / case, ckpt)
            store = predict(folder / "predict.yml", folder / "prediction.zarr")
        elif how == "viscy":  # VisCy's own store beside its inputs (uns: data_path relative to the yml's folder)
            folder = copy_case(case, root / case, ckpt)
            store = folder / "reference.zarr"
            shutil.copytree(DATA / case / "reference.zarr", store)
        elif how == "away":  # predicted into another folder, given relative to the working folder
            folder = copy_case(case, root / "inputs" / case, ckpt)
            (root / "elsewhere").mkdir()  # (predict refuses an output folder that does not exist)
            store = predict(folder / "predict.yml", Path("elsewhere") / "e.zarr")
        elif how == "moved":  # the store and its plate moved together with their folder
            folder = copy_case(case, root / "before" / case, ckpt)
            predict(folder / "predict.yml", folder / "prediction.zarr")
            shutil.move(root / "before", root / "after")
            store = root / "after" / case / "prediction.zarr"
            assert not folder.exists()
        else:  # pragma: no cover - a typo in KINDS
            raise ValueError(how)
    finally:
        os.chdir(old_cwd)
    n = ad.read_zarr(store).n_obs
    return MatrixStore(kind, case, store, DATA / case / "reference.zarr", n)
