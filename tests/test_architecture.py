"""The package's import rules: layers and forbidden imports (import-linter contracts in pyproject.toml),
no import cycles, and what importing each part actually loads."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_no_import_cycles():
    import grimp

    graph = grimp.build_graph("napari_dynaclr")
    modules = sorted(graph.modules)
    cycles = []
    for a in modules:
        for b in graph.find_modules_directly_imported_by(a):
            if b != a and graph.chain_exists(importer=b, imported=a):
                cycles.append((a, b))
    assert cycles == []


HEAVY = ("torch", "lightning", "timm", "umap", "numba", "napari", "qtpy", "PyQt5", "PyQt6", "vispy", "magicgui")
#: what napari's process must never import (import contract 4 in pyproject.toml, checked here at run time)
NOT_IN_NAPARI = ("torch", "lightning", "timm", "torchvision", "umap", "napari_dynaclr.model",
                 "napari_dynaclr.predict.single", "napari_dynaclr.predict.lightning", "napari_dynaclr.child")


def _loaded_after(statement: str, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    code = f"import sys\n{textwrap.dedent(statement)}\nprint(' '.join(m for m in {heavy!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_core_imports_no_qt_napari_or_torch():
    core = sorted(p.stem for p in (ROOT / "src" / "napari_dynaclr" / "core").glob("*.py") if p.stem != "__init__")
    assert {"config", "plate", "tracks", "patches", "normalize", "store", "reduce"} <= set(core)
    assert _loaded_after("; ".join(f"import napari_dynaclr.core.{m}" for m in core)) == []


def test_planning_and_verify_import_no_torch():
    assert _loaded_after("import napari_dynaclr.predict, napari_dynaclr.predict.client, napari_dynaclr.verify") == []


def test_the_verify_contract_loads_without_pandas_and_every_verify_name_resolves():
    """The Verify panel shows the contract's defaults as it opens: the ``verify`` package gives its ``Contract``
    without pandas or zarr (its other modules load on first use), and every name it exports resolves."""
    assert _loaded_after("from napari_dynaclr import verify\nverify.Contract()", ("pandas", "zarr", "anndata")) == []
    from napari_dynaclr import verify

    assert all(getattr(verify, name) is not None for name in verify.__all__)
    assert set(verify.__all__) <= set(dir(verify))


def test_evaluation_imports_no_torch_qt_or_numba():
    """The evaluation layer (the GUI's gallery, classifier and smoothness) loads no torch, Qt, UMAP or numba;
    pynndescent (numba) is imported only when an approximate neighbour index is built."""
    assert _loaded_after(
        "import napari_dynaclr.evaluate, napari_dynaclr.evaluate.annotations, napari_dynaclr.evaluate.classifier, "
        "napari_dynaclr.evaluate.smoothness, napari_dynaclr.evaluate.neighbours, napari_dynaclr.evaluate.mmd, "
        "napari_dynaclr.evaluate.pseudotime, napari_dynaclr.evaluate.pseudotime.dtw"
    ) == []


def test_the_cell_model_imports_no_qt_or_napari():
    """The napari layer's cell-table model (its state, selection, columns, colours, annotations) is plain Python:
    importing every module of it loads no Qt, napari, vispy, magicgui or superqt (an import contract says so)."""
    import napari_dynaclr._napari.cellmodel as cellmodel

    root = Path(cellmodel.__file__).parent
    names = sorted(f"napari_dynaclr._napari.cellmodel.{p.stem}" for p in root.glob("*.py") if p.stem != "__init__")
    assert {"napari_dynaclr._napari.cellmodel.table", "napari_dynaclr._napari.cellmodel.colors"} <= set(names)
    ui = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy", "magicgui", "superqt")
    statement = "; ".join(f"import {n}" for n in names)
    statement += "\nimport numpy as np, pandas as pd\nfrom napari_dynaclr._napari.cellmodel import column_colors\n"
    statement += "column_colors(pd.Series(np.arange(30), name='track_id')); column_colors(pd.Series(np.arange(3.0)))"
    assert _loaded_after(statement, ui) == []


def test_what_napari_loads_at_start_up_stays_light():
    """The manifest's modules (reader, sample data, docks): no torch, lightning, timm or umap."""
    loaded = _loaded_after(
        "import napari_dynaclr._napari.reader, napari_dynaclr._napari.sample_data; "
        "import napari_dynaclr._napari.widgets.main, napari_dynaclr._napari.widgets.embedding_view; "
        "import napari_dynaclr._napari.widgets.verify_panel"
    )
    assert not {"torch", "lightning", "timm", "umap"} & set(loaded)


def test_the_dock_opens_without_pandas():
    """napari imports the dock's module on its GUI thread (Plugins > DynaCLR): it must not import pandas (with
    pyarrow ≈ 0.4 s, holding the GIL); the dock imports it in a thread as it opens (workers.DATA_PACKAGES)."""
    assert _loaded_after("import napari_dynaclr._napari.widgets.main", ("pandas", "pyarrow")) == []


def test_the_plugin_and_what_the_work_process_sends_it_never_load_the_engine():
    """Every module of the plugin, and the classes of every message the work process sends napari (unpickling
    one imports its module): none of them loads torch, UMAP, the model, the backends or the child."""
    import napari_dynaclr._napari as plugin

    root = Path(plugin.__file__).parent
    names = sorted(
        "napari_dynaclr._napari." + ".".join(p.relative_to(root).with_suffix("").parts)
        for p in root.rglob("*.py") if p.name != "__init__.py"
    )
    assert {"napari_dynaclr._napari.workers", "napari_dynaclr._napari.widgets.main"} <= set(names)
    messages = (
        "import pickle, numpy as np, pandas as pd\n"
        "from napari_dynaclr.core.architecture import EncoderConfig\n"
        "from napari_dynaclr.predict import events\n"
        "sent = [events.Planned(pd.DataFrame({'t': [0]}), 1, EncoderConfig(), 'cpu'), events.Stage('writing'),\n"
        "        events.BatchResult(0, 0, 1, np.zeros((1, 2)), np.zeros((1, 2)), 1, 1, 0.1),\n"
        "        events.RunSummary(None, 1, 1, 1, 0.1, 0.2, 'cpu', EncoderConfig(), ['X_pca'])]\n"
        "blobs = [pickle.dumps(m) for m in sent]\n"
        "for name in [m for m in sys.modules if m.startswith('napari_dynaclr')]: del sys.modules[name]\n"
        "[pickle.loads(b) for b in blobs]"
    )
    assert _loaded_after(messages, NOT_IN_NAPARI) == []
    assert _loaded_after("; ".join(f"import {n}" for n in names), NOT_IN_NAPARI) == []


def test_the_plugin_makes_its_workers_one_way():
    """Every napari worker of the plugin is made by ``thread_job`` (errors to the dock, data packages imported
    one thread at a time, a generator's RuntimeError not lost): no module calls ``thread_worker`` itself."""
    import napari_dynaclr._napari as plugin

    root = Path(plugin.__file__).parent
    calls = {str(p.relative_to(root)) for p in root.rglob("*.py") if "thread_worker(" in p.read_text()}
    assert calls == {"widgets/_jobs.py"}
