"""VisCy's ``dynaclr compute-mmd`` configuration, typed and checked before any work.

The YAML VisCy reads (``MMDEvalConfig``, commit 4b62365) is accepted unchanged: ``input_path``, ``output_dir``,
``comparisons`` (``cond_a``, ``cond_b``, ``label``), ``group_by``, ``obs_filter``, ``embedding_key``,
``temporal_bin_size`` or ``temporal_bins``, ``save_plots``, ``map_settings`` and ``mmd`` (``n_permutations``,
``max_cells``, ``min_cells``, ``seed``, ``balance_samples``, ``share_bandwidth_from``), composed from ``base:``
files as VisCy's ``load_composed_config`` does (paths relative to the file, dicts merged, top-level ``_`` keys
dropped). Relative ``input_path`` / ``output_dir`` are relative to the working directory, as in VisCy.

Stricter than VisCy: an unknown key, a value of the wrong type, both ``temporal_bin_size`` and ``temporal_bins``,
or ``map_settings.enabled: true`` (copairs mAP is not implemented here) is refused with one line naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from napari_dynaclr.core.schema import brief
from napari_dynaclr.errors import ConfigError

Number = StrictInt | StrictFloat
PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Comparison(_Model):
    """One pair of conditions: ``obs[group_by] == cond_a`` against ``== cond_b``; *label* names the row."""

    cond_a: StrictStr
    cond_b: StrictStr
    label: StrictStr


class MMDSettings(_Model):
    """VisCy's ``MMDSettings`` (same names and defaults)."""

    n_permutations: PositiveInt = 1000
    max_cells: PositiveInt | None = 2000
    min_cells: Annotated[StrictInt, Field(ge=2)] = 20
    seed: NonNegativeInt = 42
    balance_samples: StrictBool = False
    share_bandwidth_from: StrictStr | None = None


class MAPSettings(_Model):
    """VisCy's copairs mAP settings: accepted, but only ``enabled: false`` runs here."""

    enabled: StrictBool = False
    distance: StrictStr = "cosine"
    null_size: PositiveInt = 10000
    seed: NonNegativeInt = 0

    @field_validator("enabled")
    @classmethod
    def _not_enabled(cls, value: bool) -> bool:
        if value:
            raise ValueError("copairs mAP is not implemented in napari-dynaclr; set map_settings.enabled: false "
                             "(map_value and map_p_value are then NaN, as VisCy writes them without mAP)")
        return value


class MMDAnalysis(_Model):
    """What to compare and how: every key of VisCy's per-experiment config except the two paths."""

    comparisons: Annotated[list[Comparison], Field(min_length=1)]
    group_by: StrictStr = "perturbation"
    obs_filter: dict[StrictStr, StrictStr] | None = None
    embedding_key: StrictStr | None = None
    mmd: MMDSettings = MMDSettings()
    map_settings: MAPSettings = MAPSettings()
    temporal_bin_size: Annotated[Number, Field(gt=0)] | None = None
    temporal_bins: Annotated[list[Number], Field(min_length=2)] | None = None
    save_plots: StrictBool = True

    @field_validator("temporal_bins")
    @classmethod
    def _increasing(cls, edges: list[float] | None) -> list[float] | None:
        if edges is not None and any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError("bin edges must increase, e.g. [0, 6, 12, 24]")
        return edges

    @model_validator(mode="after")
    def _one_binning(self) -> MMDAnalysis:
        if self.temporal_bin_size is not None and self.temporal_bins is not None:
            raise ValueError("temporal_bin_size and temporal_bins are mutually exclusive; keep one of them")
        return self

    @property
    def temporal(self) -> bool:
        return self.temporal_bin_size is not None or self.temporal_bins is not None

    @property
    def embedding_label(self) -> str:
        """VisCy's ``embedding_key`` column: the obsm key, or ``"X"``."""
        return self.embedding_key if self.embedding_key is not None else "X"


class MMDRunConfig(MMDAnalysis):
    """VisCy's ``MMDEvalConfig``: the analysis plus the store to read and the folder of the CSV."""

    input_path: StrictStr
    output_dir: StrictStr


_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "bool_type": "true or false", "string_type": "a string",
    "float_type": "a number", "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
    "model_attributes_type": "a mapping", "greater_than": "a value > {gt}", "greater_than_equal": "a value >= {ge}",
    "too_short": "a list of at least {min_length} item(s)",
}


def _keys_of(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys the (sub)model at *loc* accepts, for an unknown-key message."""
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        sub = field.annotation
        for candidate in (sub, *getattr(sub, "__args__", ())):
            for inner in (candidate, *getattr(candidate, "__args__", ())):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    model = inner
                    break
    return list(model.model_fields)


_UNION_TAGS = ("int", "float")  # pydantic names the member of ``int | float`` that failed; one problem for us


def _where(err: dict) -> tuple:
    loc = tuple(err["loc"])
    return loc[:-1] if loc and loc[-1] in _UNION_TAGS else loc


def _first_problem(exc: ValidationError, model: type[BaseModel]) -> str:
    err = exc.errors(include_url=False)[0]
    loc = _where(err)
    where = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        return f"unknown key {where!r} (allowed here: {', '.join(_keys_of(model, loc))})"
    if err["type"] == "missing":
        return f"missing key {where!r}"
    if err["type"] in ("value_error", "assertion_error"):
        msg = str(err.get("ctx", {}).get("error", err["msg"]))
        return f"{where}: {msg}" if where else msg
    template = _EXPECTED.get(err["type"])
    what = template.format(**err.get("ctx", {})) if template else err["msg"]
    if len(err["loc"]) > len(loc) and err["type"] in ("int_type", "float_type"):
        what = "a number"
    got = brief(err.get("input"))
    return f"{where}: expected {what}, got {got}"


def parse_analysis(raw: Mapping[str, Any], source: str, with_paths: bool = True) -> MMDAnalysis:
    """Validate a config mapping (:class:`MMDRunConfig`, or :class:`MMDAnalysis` without the two paths).
    Raises :class:`ConfigError` ``<source>: <problem>`` for the first problem."""
    model = MMDRunConfig if with_paths else MMDAnalysis
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: expected a mapping of keys (input_path, output_dir, comparisons, …), "
                          f"got {type(raw).__name__}")
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        problems = len({_where(e) for e in exc.errors(include_url=False)})
        more = f" (+{problems - 1} more problem{'s' if problems > 2 else ''})" if problems > 1 else ""
        raise ConfigError(f"{source}: {_first_problem(exc, model)}{more}") from None


def _deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _deep_merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) \
            else value
    return out


def _read_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise ConfigError(f"config {path} not found" if not path.exists() else f"config {path} is not a file")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        first = str(exc).splitlines()[0][:150] if str(exc) else type(exc).__name__
        raise ConfigError(f"config {path} is not readable YAML ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} holds a {type(data).__name__}, not a mapping of keys")
    return data


def compose_yaml(path: str | Path, _seen: frozenset[Path] = frozenset()) -> dict:
    """A YAML mapping with its ``base:`` files merged first (VisCy's ``load_composed_config``)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"config {path}: circular base: reference")
    data = _read_yaml(path)
    bases = data.pop("base", None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"config {path}: base: expected a path or a list of paths, got {brief(bases)}")
    merged: dict = {}
    for rel in bases:
        merged = _deep_merge(merged, compose_yaml(path.parent / rel, _seen | {path}))
    return {k: v for k, v in _deep_merge(merged, data).items() if not str(k).startswith("_")}


def load_mmd_config(path: str | Path) -> MMDRunConfig:
    """Read and validate a ``compute-mmd`` YAML (see the module). Raises :class:`ConfigError`."""
    return parse_analysis(compose_yaml(path), f"config {path}")
