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


def _loaded_after(statement: str) -> list[str]:
    code = textwrap.dedent(f"""
        import sys
        {statement}
        heavy = ("torch", "lightning", "timm", "umap", "numba", "napari", "qtpy", "PyQt5", "PyQt6", "vispy", "magicgui")
        print(" ".join(m for m in heavy if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_core_imports_no_qt_napari_or_torch():
    core = sorted(p.stem for p in (ROOT / "src" / "napari_dynaclr" / "core").glob("*.py") if p.stem != "__init__")
    assert {"config", "plate", "tracks", "patches", "normalize", "store", "reduce"} <= set(core)
    assert _loaded_after("; ".join(f"import napari_dynaclr.core.{m}" for m in core)) == []


def test_planning_and_verify_import_no_torch():
    assert _loaded_after("import napari_dynaclr.predict, napari_dynaclr.predict.client, napari_dynaclr.verify") == []


def test_evaluation_imports_no_torch_qt_or_numba():
    """The evaluation layer (the GUI's gallery, classifier and smoothness) loads no torch, Qt, UMAP or numba;
    pynndescent (numba) is imported only when an approximate neighbour index is built."""
    assert _loaded_after(
        "import napari_dynaclr.evaluate, napari_dynaclr.evaluate.annotations, napari_dynaclr.evaluate.classifier, "
        "napari_dynaclr.evaluate.smoothness, napari_dynaclr.evaluate.neighbours, napari_dynaclr.evaluate.mmd, "
        "napari_dynaclr.evaluate.pseudotime, napari_dynaclr.evaluate.pseudotime.dtw"
    ) == []


def test_what_napari_loads_at_start_up_stays_light():
    """The manifest's modules (reader, sample data, docks): no torch, lightning, timm or umap."""
    loaded = _loaded_after(
        "import napari_dynaclr._napari.reader, napari_dynaclr._napari.sample_data; "
        "import napari_dynaclr._napari.widgets.main, napari_dynaclr._napari.widgets.embedding_view; "
        "import napari_dynaclr._napari.widgets.verify_panel"
    )
    assert not {"torch", "lightning", "timm", "umap"} & set(loaded)


def test_the_plugin_makes_its_workers_one_way():
    """Every napari worker of the plugin is made by ``thread_job`` (errors to the dock, data packages imported
    one thread at a time, a generator's RuntimeError not lost): no module calls ``thread_worker`` itself."""
    import napari_dynaclr._napari as plugin

    root = Path(plugin.__file__).parent
    calls = {str(p.relative_to(root)) for p in root.rglob("*.py") if "thread_worker(" in p.read_text()}
    assert calls == {"widgets/_jobs.py"}
