"""Command line: ``napari-dynaclr predict | verify | evaluate | cell-index | demo | info``, one module per command.

Bad input prints one line ``napari-dynaclr: error: ...`` (settings named by their flags,
:mod:`~napari_dynaclr.cli.wording`) and exits non-zero (2); ``--debug`` shows the traceback. Ctrl-C / SIGTERM
stop the run and leave nothing at the output path (exit 130).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings

from napari_dynaclr.cli import cell_index, demo, evaluate, info, predict, verify
from napari_dynaclr.cli.wording import CLI
from napari_dynaclr.errors import Cancelled, DynaclrError, DynaclrWarning, InterruptedAfterCommit

PROG = "napari-dynaclr"
COMMANDS = (predict, verify, evaluate, cell_index, demo, info)  # in the order --help lists them


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Run, inspect and verify VisCy DynaCLR embeddings.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__import__('napari_dynaclr').__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    text = message.describe(CLI) if isinstance(message, DynaclrWarning) else message
    print(f"{PROG}: warning: {text}", file=sys.stderr)


def _on_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one interruption is enough; let the cleanup run
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    def _capped(exc: BaseException, limit: int = 500) -> str:  # a 2 KB input never prints megabytes
        msg = exc.describe(CLI) if isinstance(exc, DynaclrError) else str(exc)
        return msg if len(msg) <= limit else msg[: limit - 1] + "…"

    parser = make_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    args = parser.parse_args(argv)
    if not debug:
        warnings.showwarning = _show_warning
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        logging.getLogger("lightning").setLevel(logging.ERROR)
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if os.name == "posix" else None
    try:
        return int(args.func(args) or 0)
    except InterruptedAfterCommit as exc:  # the store was already complete: say so
        print(f"{PROG}: {_capped(exc)}", file=sys.stderr)
        return exc.exit_code
    except Cancelled as exc:
        print(f"{PROG}: {_capped(exc)}; nothing written", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing written", file=sys.stderr)
        return 130
    except DynaclrError as exc:
        if debug:
            raise
        print(f"{PROG}: error: {_capped(exc)}", file=sys.stderr)
        return exc.exit_code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
