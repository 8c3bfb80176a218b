"""Every module of the package stays under 500 lines (issue 22: one concern per module, a name that says it)."""

from pathlib import Path

import napari_dynaclr

LIMIT = 500


def test_no_module_reaches_500_lines():
    root = Path(napari_dynaclr.__file__).parent
    sizes = {str(p.relative_to(root)): len(p.read_text().splitlines()) for p in root.rglob("*.py")}
    assert sizes, root
    assert {name: n for name, n in sizes.items() if n >= LIMIT} == {}
