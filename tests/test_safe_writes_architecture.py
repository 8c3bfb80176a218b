"""Every file napari-dynaclr writes goes through the one safe write path (:mod:`napari_dynaclr.core.output`).

The source of every module under ``src/`` is scanned for file writes — writing or creating files and folders,
moving, replacing or removing them — outside ``core/output``. A write is allowed elsewhere only inside a function
marked ``@temporary_writer`` (it writes into a temporary path the safe path handed out, checked on every call),
or in the one documented exception below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_dynaclr"

#: (module, call) allowed outside core/output, with why
ALLOWED = {
    # save_checkpoint writes where it is told (a public API of the model package); in the tool it is called only
    # by a @temporary_writer (the demo's checkpoint), see test_save_checkpoint_is_called_only_by_writers
    ("model/checkpoint.py", "torch.save"),
}

_PATH_METHODS = {"write_text", "write_bytes", "unlink", "rmdir", "mkdir", "touch", "symlink_to", "hardlink_to",
                 "write_zarr", "write_h5ad", "write_table", "to_zarr", "savefig", "chmod"}
_FRAME_WRITERS = {"to_csv", "to_parquet", "to_json", "to_pickle", "to_hdf", "to_feather", "to_excel", "to_html"}
_MODULE_CALLS = {
    "os": {"replace", "rename", "renames", "remove", "unlink", "rmdir", "removedirs", "makedirs", "mkdir", "symlink",
           "link", "truncate", "chmod", "open", "mkfifo"},
    "shutil": {"rmtree", "move", "copy", "copy2", "copyfile", "copytree", "copyfileobj"},
    "np": {"save", "savez", "savez_compressed", "savetxt"},
    "numpy": {"save", "savez", "savez_compressed", "savetxt"},
    "torch": {"save"},
    "tempfile": {"mkdtemp", "mkstemp", "NamedTemporaryFile", "TemporaryDirectory", "SpooledTemporaryFile"},
    "json": {"dump"},
    "pickle": {"dump"},
    "pq": {"write_table", "write_to_dataset"},
}
_STREAM_DUMPS = {"dump", "safe_dump"}  # yaml: a write only with a stream argument


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _mode(call: ast.Call, position: int) -> str | None:
    for kw in call.keywords:
        if kw.arg == "mode":
            return kw.value.value if isinstance(kw.value, ast.Constant) else "?"
    if len(call.args) > position and isinstance(call.args[position], ast.Constant):
        return call.args[position].value
    return None


def write_call(call: ast.Call) -> str | None:
    """What file write *call* is (e.g. ``"shutil.rmtree"``), or None when it writes no file."""
    func = call.func
    name = _dotted(func)
    if isinstance(func, ast.Name):
        if func.id == "open":
            mode = _mode(call, 1)
            return "open(w)" if mode is not None and set(str(mode)) & set("wax+?") else None
        if func.id in ("open_ome_zarr", "open_group", "open_array"):
            mode = _mode(call, 99)
            return None if mode == "r" else f"{func.id}(mode={mode})"
        return None
    if not isinstance(func, ast.Attribute):
        return None
    owner, attr = _dotted(func.value), func.attr
    if attr in _MODULE_CALLS.get(owner.split(".")[-1], set()):
        return name
    if owner in ("yaml",) and attr in _STREAM_DUMPS:
        return name if len(call.args) > 1 or any(k.arg == "stream" for k in call.keywords) else None
    if owner == "zarr" and attr in ("open", "open_group", "open_array", "group", "create", "array", "save"):
        mode = _mode(call, 99)
        return None if mode == "r" else f"zarr.{attr}(mode={mode})"
    if attr == "open":  # Path.open / gzip.open …
        mode = _mode(call, 0)
        return f"{name}(w)" if mode is not None and set(str(mode)) & set("wax+?") else None
    if attr in _PATH_METHODS:
        return f".{attr}"
    if attr in _FRAME_WRITERS:  # a path (first argument or path_or_buf) makes it a file write
        has_path = bool(call.args) and not (isinstance(call.args[0], ast.Constant) and call.args[0].value is None)
        has_path |= any(k.arg in ("path_or_buf", "path", "excel_writer", "buf") for k in call.keywords)
        return f".{attr}(path)" if has_path else None
    if attr in ("rename", "replace") and len(call.args) == 1 and not call.keywords and owner not in (
            "dataclasses", "datetime", "str"):
        return f".{attr}"  # Path.rename/replace (str.replace and DataFrame.rename take other arguments)
    return None


def _is_writer(fn: ast.AST) -> bool:
    return isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and any(
        _dotted(d).split(".")[-1] == "temporary_writer" for d in fn.decorator_list)


def unguarded_writes(source: str, module: str = "<snippet>") -> list[str]:
    """The file writes of *source* outside a ``@temporary_writer`` function: ``"module:line call"``."""
    found: list[str] = []

    def visit(node: ast.AST, in_writer: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_writer or _is_writer(child)
            if isinstance(child, ast.Call) and not inside:
                what = write_call(child)
                if what is not None and (module, what) not in ALLOWED:
                    found.append(f"{module}:{child.lineno} {what}")
            visit(child, inside)

    visit(ast.parse(source), False)
    return found


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if not rel.startswith("core/output/"):
            yield rel, path.read_text(encoding="utf-8")


def test_no_module_writes_a_file_outside_the_safe_write_path():
    found = [w for rel, text in _modules() for w in unguarded_writes(text, rel)]
    assert found == [], "file writes outside napari_dynaclr.core.output (route them through it):\n" + "\n".join(found)


def test_save_checkpoint_is_called_only_by_writers():
    """The one allowed exception (torch.save in save_checkpoint) writes only where a @temporary_writer tells it."""
    callers = []
    for rel, text in _modules():
        tree = ast.parse(text)
        writers = {id(n) for fn in ast.walk(tree) if _is_writer(fn) for n in ast.walk(fn)}
        callers += [f"{rel}:{n.lineno}" for n in ast.walk(tree) if isinstance(n, ast.Call)
                    and _dotted(n.func).split(".")[-1] == "save_checkpoint" and id(n) not in writers]
    assert callers == []


@pytest.mark.parametrize("snippet", [
    "Path(p).write_text('x')",
    "open(p, 'w')",
    "open(p, mode='a')",
    "p.open('wb')",
    "df.to_csv(p, index=False)",
    "df.to_parquet(path=p)",
    "shutil.rmtree(p)",
    "os.replace(a, b)",
    "os.rename(a, b)",
    "p.unlink()",
    "p.mkdir(parents=True)",
    "tmp.replace(final)",
    "np.savez(p, a=a)",
    "torch.save(obj, p)",
    "adata.write_zarr(p)",
    "pq.write_table(t, p)",
    "zarr.open(p)",
    "zarr.open_group(p, mode='a')",
    "open_ome_zarr(p, layout='hcs', mode='w-')",
    "json.dump(doc, fh)",
    "yaml.safe_dump(doc, fh)",
    "tempfile.mkdtemp()",
])
def test_the_scan_finds_file_writes(snippet):
    assert unguarded_writes(snippet) != []


@pytest.mark.parametrize("snippet", [
    "df.to_csv(index=False)",
    "text.replace('a', 'b')",
    "dataclasses.replace(cfg, a=1)",
    "df.rename(columns={'a': 'b'})",
    "open(p)",
    "open(p, 'rb')",
    "zarr.open_group(p, mode='r')",
    "yaml.safe_dump(doc, sort_keys=False)",
    "json.dumps(doc)",
    "@temporary_writer\ndef w(tmp):\n    shutil.rmtree(tmp)\n    open(tmp / 'x', 'w')",
])
def test_the_scan_leaves_reads_and_writers_alone(snippet):
    assert unguarded_writes(snippet) == []


def test_a_writer_refuses_a_path_the_safe_path_did_not_hand_out(tmp_path):
    from napari_dynaclr.core.output import temporary_writer, write_atomically

    @temporary_writer
    def write(tmp, text):
        Path(tmp).write_text(text)

    with pytest.raises(RuntimeError, match="writes only into a temporary path"):
        write(tmp_path / "anywhere.txt", "x")
    assert not (tmp_path / "anywhere.txt").exists()
    write_atomically(tmp_path / "report.txt", lambda tmp: write(tmp, "ok"), kind="text")
    assert (tmp_path / "report.txt").read_text() == "ok"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.txt"]
