"""Running the CLI in-process in a test, and reading its one-line error (shared by the bad-input tests)."""

from __future__ import annotations

from napari_dynaclr.cli import main


def cli(capsys, *argv):
    """``napari-dynaclr *argv``: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error(code, err) -> str:
    """The single ``napari-dynaclr: error: …`` line of a refused run (exit 2; warnings aside)."""
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("napari-dynaclr: warning")]
    assert len(lines) == 1 and lines[0].startswith("napari-dynaclr: error: "), err
    return lines[0]
