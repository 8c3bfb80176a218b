"""The docs name what exists. Every module path and dotted name (``napari_dynaclr.core.output``,
``session.prepare_table``), every repository path (``core/percentile.py``, ``tests/test_verify.py``) and every
command-line flag (``--split none``) that README.md and docs/*.md write in backticks, and every command of the
README's command-line summary, is checked against the code: a reference the code no longer has fails here."""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import re
from functools import cache
from pathlib import Path

import pytest

import napari_dynaclr
from napari_dynaclr.cli import make_parser

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(napari_dynaclr.__file__).parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: first parts of dotted names that are not ours (libraries, VisCy, objects of a user's session)
NOT_OURS = {"np", "pd", "torch", "anndata", "zarr", "gc", "sys", "napari", "viewer", "dynaclr", "viscy_utils",
            "LogisticRegression", "Markers", "head", "scipy", "layer", "Points", "Text", "QProgressBar"}
#: Python files the docs name that are not ours: VisCy's, or a scratch script of a measurement
NOT_OUR_FILES = {"final_mo.py"}
#: VisCy's options, named where the docs compare with VisCy (build-cell-index)
NOT_OUR_FLAGS = {"--num-workers"}
#: folders a repository path starts with, and where each resolves
PATH_BASES = [ROOT, PACKAGE, PACKAGE / "_napari"]
OUR_DIRS = ("src/", "tests/", "benchmarks/", "docs/", ".ci/", "core/", "model/", "predict/", "verify/",
            "evaluate/", "cli/", "_napari/", "widgets/")
FILE_SUFFIX = re.compile(r"\.(py|md|sh|toml|yaml|yml|txt|json|gz|csv|npz|zarr|ckpt|parquet)$")


def _spans(text: str) -> list[str]:
    """Inline code of a markdown text (fenced blocks left out)."""
    return re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))


def _fenced_commands(text: str) -> list[str]:
    """``napari-dynaclr …`` command lines of the fenced blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        current = None
        for line in block.splitlines():
            found = re.match(r"\s*(\S*/)?(napari-dynaclr\s+[a-z].*)", line)
            if found:
                current = found.group(2)
                commands.append(current)
            elif current is not None and line.startswith(" ") and line.strip():
                commands[-1] += " " + line.strip()
            else:
                current = None
    return [re.sub(r"\s+#.*$", "", c).replace("\\", " ") for c in commands]


@cache
def _config_roots() -> set[str]:
    """The top-level keys of the config files the docs describe (predict.yml, the evaluation YAMLs, read from the
    test data) and the EmbeddingWriter's reduction arguments: ``mmd.min_cells`` is a key path, not code."""
    import yaml

    from napari_dynaclr.core.schema import WriterSchema

    roots = {k for k in WriterSchema.model_fields if k.endswith("_kwargs")}
    for path in [*(ROOT / "tests" / "data").rglob("*.yml"), *(ROOT / "tests" / "data").rglob("*.yaml")]:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict):
            roots |= set(doc)
    return roots


def _all_spans() -> list[tuple[str, str]]:
    return [(doc.name, span) for doc in DOCS for span in _spans(doc.read_text(encoding="utf-8"))]


# ------------------------------------------------------------------ our modules and names


@cache
def _modules() -> dict[str, list[str]]:
    """Every module of the package, by each dotted suffix of its name (``store``, ``core.store``, …)."""
    names = ["napari_dynaclr"] + [m.name for m in pkgutil.walk_packages([str(PACKAGE)], "napari_dynaclr.")
                                  if not m.name.endswith("__main__")]
    by_suffix: dict[str, list[str]] = {}
    for name in names:
        parts = name.split(".")
        for i in range(len(parts)):
            by_suffix.setdefault(".".join(parts[i:]), []).append(name)
    return by_suffix


@cache
def _classes() -> dict[str, list[type]]:
    """Every class the package defines, by name (imports torch-free modules only: what the docs name is there)."""
    found: dict[str, list[type]] = {}
    for name in sorted({n for names in _modules().values() for n in names}):
        try:
            module = importlib.import_module(name)
        except ImportError:  # an optional extra (openvino) that is not installed
            continue
        for cls_name, cls in vars(module).items():
            if inspect.isclass(cls) and cls.__module__ == name:
                found.setdefault(cls_name, []).append(cls)
    return found


def _has(obj, attr: str) -> bool:
    if hasattr(obj, attr):
        return True
    if inspect.isclass(obj):  # an instance attribute, set in __init__ or declared as a dataclass field
        fields = getattr(obj, "__dataclass_fields__", {})
        try:
            init = inspect.getsource(obj.__init__) if "__init__" in vars(obj) else ""
        except (OSError, TypeError):  # a generated __init__ (dataclass)
            init = ""
        return attr in fields or f"self.{attr} " in init or f"self.{attr}:" in init
    return False


def _resolves(dotted: str) -> bool:
    """*dotted* names one of our modules, or an attribute of one (a module's name, a class's member)."""
    parts = dotted.removesuffix("()").split(".")
    for n in range(len(parts), 0, -1):  # the longest prefix that is a module
        for module_name in _modules().get(".".join(parts[:n]), []):
            obj = importlib.import_module(module_name)
            rest = parts[n:]
            while rest and _has(obj, rest[0]):
                obj = getattr(obj, rest[0], None) or next(
                    (c for c in _classes().get(rest[0], [])), obj)
                rest = rest[1:]
            if not rest:
                return True
    for cls in _classes().get(parts[0], []):  # ``ExplorerSession.show_fov``
        if len(parts) == 2 and _has(cls, parts[1]):
            return True
    return False


def _is_ours(root: str) -> bool:
    return root in _modules() or root in _classes()


DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+(\(\))?")


def test_every_dotted_name_the_docs_give_exists():
    stale, unknown = [], []
    for doc, span in _all_spans():
        if not DOTTED.fullmatch(span) or FILE_SUFFIX.search(span):
            continue
        root = span.split(".")[0]
        if root in NOT_OURS or (root in _config_roots() and not (_is_ours(root) and _resolves(span))):
            continue  # a library's name, or a config key path (``mmd.min_cells``) unless it names our code
        if not _is_ours(root):
            unknown.append(f"{doc}: `{span}`")
        elif not _resolves(span):
            stale.append(f"{doc}: `{span}`")
    assert (stale, unknown) == ([], []), ("names the code no longer has:\n" + "\n".join(stale)
                                          + "\nnot ours and not in NOT_OURS (a module that moved?):\n"
                                          + "\n".join(unknown))


def test_every_python_file_the_docs_name_exists():
    ours = {p.name for p in ROOT.rglob("*.py") if ".venv" not in p.parts}
    missing = [f"{doc}: `{span}`" for doc, span in _all_spans()
               if re.fullmatch(r"[\w.]+\.py", span) and span not in ours and span not in NOT_OUR_FILES]
    assert missing == []


def _path_exists(path: str) -> bool:
    path = path.removeprefix("./")
    if not FILE_SUFFIX.search(path) and re.search(r"\.[A-Za-z_]\w*$", path.rsplit("/", 1)[-1]):
        module, _, attr = path.rpartition(".")  # ``widgets/plot_axis.PlotAxis``: a module's member
        return any((base / f"{module}.py").is_file() and _resolves(f"{module.replace('/', '.')}.{attr}")
                   for base in PATH_BASES)
    return any(list(base.glob(path)) for base in PATH_BASES)


def test_every_repository_path_the_docs_name_exists():
    missing = []
    for doc, span in _all_spans():
        if " " in span or "<" in span or not (span.startswith(OUR_DIRS) or
                                              (span.startswith("./") and FILE_SUFFIX.search(span))):
            continue
        if not _path_exists(span):
            missing.append(f"{doc}: `{span}`")
    assert missing == [], "paths that do not exist:\n" + "\n".join(missing)


# ------------------------------------------------------------------ the command line


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse lists subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The options of *parser* and of its subcommands, by option string."""
    found = {s: a for a in parser._actions for s in a.option_strings}
    for sub in _subparsers(parser).values():
        found.update(_options(sub))
    return found


@cache
def _script_flags() -> set[str]:
    """Flags of the benchmark and docs scripts (their own argparse, read from the source)."""
    flags = set()
    for path in [*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "docs").glob("*.py")]:
        flags |= set(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", path.read_text(encoding="utf-8")))
    return flags


def _flag_problems(words: list[str], options: dict[str, argparse.Action], others: set[str] = frozenset(),
                   complete: bool = False) -> list[str]:
    """Flags in *words* that *options* (or *others*) lack, and values outside a flag's choices. *complete*:
    an ``a|b|c`` list of values must give every choice."""
    problems = []
    for i, word in enumerate(words):
        for flag in re.findall(r"--[a-z][\w-]*", word):
            if flag not in options:
                if flag not in others:
                    problems.append(f"no option {flag}")
                continue
            choices = options[flag].choices
            value = words[i + 1].strip("[]()") if i + 1 < len(words) and word.endswith(flag) else ""
            if not choices or not value or value.startswith("-") or value in ("…", "...") or value.isupper():
                continue
            given = value.split("|")
            bad = [v for v in given if v not in choices]
            if bad:
                problems.append(f"{flag} {'|'.join(bad)}: not one of {', '.join(map(str, choices))}")
            elif complete and len(given) > 1 and set(given) != set(choices):
                problems.append(f"{flag} {value}: leaves out {', '.join(sorted(set(choices) - set(given)))}")
    return problems


def test_every_flag_the_docs_give_exists_with_its_values():
    options = _options(make_parser())
    problems = [f"{doc}: `{span}`: {p}" for doc, span in _all_spans() if span.startswith(("--", "napari-dynaclr "))
                for p in _flag_problems(span.split(), options, _script_flags() | NOT_OUR_FLAGS)]
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_the_documented_commands_match_the_parser(doc):
    """Each ``napari-dynaclr …`` line of a code block: its command exists, its flags too, with all their values
    where it lists them (``--split cell|track|none``)."""
    commands = _subparsers(make_parser())
    problems = []
    for line in _fenced_commands(doc.read_text(encoding="utf-8")):
        words = line.split()
        name = words[1]
        if name not in commands:
            problems.append(f"{line[:60]}: no command {name!r}")
            continue
        problems += [f"{line[:60]}: {p}" for p in _flag_problems(words[2:], _options(commands[name]),
                                                                  complete=True)]
    assert problems == [], "\n".join(problems)


def test_the_readme_summarises_every_command():
    summary = " ".join(_fenced_commands((ROOT / "README.md").read_text(encoding="utf-8")))
    missing = [name for name in _subparsers(make_parser()) if f"napari-dynaclr {name}" not in summary]
    assert missing == []
