"""How the DynaCLR dock words the engine's messages: its controls instead of the command line's flags."""

from __future__ import annotations

from napari_dynaclr.errors import DynaclrError

#: how the dock's messages tell the user to allow a replacement (the CLI says "pass --overwrite")
OVERWRITE_HINT = "tick 'overwrite' in the DynaCLR dock"

#: the command line's words in the engine's messages, and the dock's controls that do the same
GUI_WORDS = (
    ("pass --overwrite", OVERWRITE_HINT),
    ("pass --allow-nonfinite", "tick 'allow non-finite values' (Predict > Advanced settings)"),
    ("(--allow-nonfinite)", "('allow non-finite values')"),
    ("try --precision 32-true", "set trainer precision: 32-true in the predict.yml"),
    ("give --output (or EmbeddingWriter output_path)", "choose an 'output store'"),
    ("give --ckpt-path (or ckpt_path in the config)", "choose a 'checkpoint'"),
)


def gui_wording(message: str) -> str:
    """*message* with the command line's flags replaced by the dock's controls."""
    for cli, gui in GUI_WORDS:
        message = message.replace(cli, gui)
    return message


def error_message(exc: BaseException) -> str:
    """What the dock says about *exc*: our own errors in the dock's words, others with their type."""
    if isinstance(exc, DynaclrError):
        return gui_wording(str(exc))
    return f"{type(exc).__name__}: {exc}"
