"""One way to start a dock's job: every napari worker a widget starts goes through ``DockJobs.start``, whose
handlers run only while the dock exists. A widget module that connects a worker's signals by hand (the
handler then runs after its dock is gone) fails this test."""

from __future__ import annotations

import ast
from pathlib import Path

import napari_dynaclr._napari.widgets as widgets

WORKER_SIGNALS = {"yielded", "returned", "errored", "started", "aborted"}

def _hand_connections(path: Path) -> list[str]:
    """``<x>.<worker signal>.connect(...)`` calls in *path*."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect"
                and isinstance(node.func.value, ast.Attribute) and node.func.value.attr in WORKER_SIGNALS):
            found.append(f"{path.name}:{node.lineno} .{node.func.value.attr}.connect")
    return found


def test_widgets_start_their_jobs_through_dock_jobs():
    root = Path(widgets.__file__).parent
    by_module = {}
    for path in sorted(root.glob("*.py")):
        if path.name == "_jobs.py":  # where DockJobs.start connects them, alive-checked
            continue
        if found := _hand_connections(path):
            by_module[path.name] = found
    assert by_module == {}, by_module


def test_the_check_finds_a_hand_connection(tmp_path):
    module = tmp_path / "widget.py"
    module.write_text("def run(worker, slot):\n    worker.returned.connect(slot)\n    worker.yielded.connect(slot)\n")
    assert _hand_connections(module) == ["widget.py:2 .returned.connect", "widget.py:3 .yielded.connect"]
