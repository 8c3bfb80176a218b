"""VisCy's ``dynaclr compute-mmd`` configuration, typed and checked before any work.

The YAML VisCy reads (``MMDEvalConfig``, commit 4b62365) is accepted unchanged: ``input_path``, ``output_dir``,
``comparisons`` (``cond_a``, ``cond_b``, ``label``), ``group_by``, ``obs_filter``, ``embedding_key``,
``temporal_bin_size`` or ``temporal_bins``, ``save_plots``, ``map_settings`` and ``mmd`` (``n_permutations``,
``max_cells``, ``min_cells``, ``seed``, ``balance_samples``, ``share_bandwidth_from``), composed from ``base:``
files as VisCy's ``load_composed_config`` does (paths relative to the file, dicts merged, top-level ``_`` keys
dropped). Relative ``input_path`` / ``output_dir`` are relative to the working directory, as in VisCy.

The other two modes of ``compute-mmd`` read the same keys with ``input_paths`` (a list of stores) instead of
``input_path``: ``--pooled`` (``MMDPooledConfig``: ``comparisons`` and ``condition_aliases``) and ``--combined``
(``MMDCombinedConfig``: no comparisons). A config written for another mode is refused naming the mode it fits.

Stricter than VisCy: an unknown key, a value of the wrong type, both ``temporal_bin_size`` and ``temporal_bins``,
or ``map_settings.enabled: true`` (copairs mAP is not implemented here) is refused with one line naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator, model_validator

from napari_dynaclr.errors import ConfigError
from napari_dynaclr.evaluate.yaml_config import StrictModel, compose_yaml, validate_config

Number = StrictInt | StrictFloat
PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]


class Comparison(StrictModel):
    """One pair of conditions: ``obs[group_by] == cond_a`` against ``== cond_b``; *label* names the row."""

    cond_a: StrictStr
    cond_b: StrictStr
    label: StrictStr


class MMDSettings(StrictModel):
    """VisCy's ``MMDSettings`` (same names and defaults)."""

    n_permutations: PositiveInt = 1000
    max_cells: PositiveInt | None = 2000
    min_cells: Annotated[StrictInt, Field(ge=2)] = 20
    seed: NonNegativeInt = 42
    balance_samples: StrictBool = False
    share_bandwidth_from: StrictStr | None = None


class MAPSettings(StrictModel):
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


class MMDBase(StrictModel):
    """The keys every mode shares (VisCy's ``_MMDBaseConfig`` without ``output_dir``)."""

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
    def _one_binning(self) -> MMDBase:
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


class MMDAnalysis(MMDBase):
    """What to compare and how: every key of VisCy's per-experiment config except the two paths."""

    comparisons: Annotated[list[Comparison], Field(min_length=1)]


class MMDRunConfig(MMDAnalysis):
    """VisCy's ``MMDEvalConfig``: the analysis plus the store to read and the folder of the CSV."""

    input_path: StrictStr
    output_dir: StrictStr


class MMDPooledConfig(MMDAnalysis):
    """VisCy's ``MMDPooledConfig`` (``--pooled``): the stores of ``input_paths`` pooled into one, compared as
    one experiment; ``condition_aliases`` maps a canonical condition to the values of ``group_by`` it stands for
    (``{uninfected: [uninfected1, uninfected2]}``)."""

    input_paths: Annotated[list[StrictStr], Field(min_length=1)]
    output_dir: StrictStr
    condition_aliases: dict[StrictStr, list[StrictStr]] | None = None

    @field_validator("condition_aliases")
    @classmethod
    def _one_canonical_each(cls, aliases: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        seen: dict[str, str] = {}
        for canonical, variants in (aliases or {}).items():
            for v in variants:
                if seen.setdefault(v, canonical) != canonical:
                    raise ValueError(f"{v!r} is listed under both {seen[v]!r} and {canonical!r}; give each value "
                                     "one canonical name")
        return aliases


class MMDCombinedConfig(MMDBase):
    """VisCy's ``MMDCombinedConfig`` (``--combined``): every pair of the stores of ``input_paths`` (one
    experiment each) compared per shared marker, shared condition and time bin, after mean-centring."""

    input_paths: Annotated[list[StrictStr], Field(min_length=2)]
    output_dir: StrictStr


#: the config model of each mode of ``compute-mmd`` (VisCy's flags; None: the per-experiment mode)
MODES: dict[str | None, type[MMDBase]] = {None: MMDRunConfig, "pooled": MMDPooledConfig,
                                          "combined": MMDCombinedConfig}


def parse_analysis(raw: Mapping[str, Any], source: str, with_paths: bool = True) -> MMDAnalysis:
    """Validate a config mapping (:class:`MMDRunConfig`, or :class:`MMDAnalysis` without the two paths).
    Raises :class:`ConfigError` ``<source>: <problem>`` for the first problem."""
    return validate_config(MMDRunConfig if with_paths else MMDAnalysis, raw, source)


def _check_mode(raw: Mapping[str, Any], source: str, mode: str | None) -> None:
    """A config written for another mode, named as such (the typed model would only see an unknown key)."""
    if not isinstance(raw, Mapping):
        return
    if mode is None and "input_paths" in raw and "input_path" not in raw:
        raise ConfigError(f"{source} has input_paths (a list of stores: VisCy's --pooled or --combined mode); "
                          "pass --pooled or --combined, or give one store as input_path")
    if mode is not None and "input_path" in raw and "input_paths" not in raw:
        raise ConfigError(f"{source} has input_path (one store: the per-experiment mode); --{mode} reads "
                          f"input_paths, a list of stores: run without --{mode}, or write input_paths: [...]")
    if mode == "combined":
        for key, why in (("comparisons", "compares every condition two experiments share"),
                         ("condition_aliases", "compares the conditions as stored")):
            if key in raw:
                raise ConfigError(f"{source}: --combined {why} and takes no {key!r} (VisCy ignores it); remove "
                                  "the key, or run --pooled")


def load_mmd_config(path: str | Path, mode: str | None = None) -> MMDBase:
    """Read and validate a ``compute-mmd`` YAML for *mode* (None, ``"pooled"`` or ``"combined"``: see the
    module and :data:`MODES`). Raises :class:`ConfigError`."""
    raw, source = compose_yaml(path), f"config {path}"
    _check_mode(raw, source, mode)
    return validate_config(MODES[mode], raw, source)
