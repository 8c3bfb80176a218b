"""The napari layer's cell-table model: Qt-free and napari-free (an import contract in pyproject.toml says so).

- :mod:`.table` — the cell table (one row per cell) and its column queries;
- :mod:`.annotations` — the annotation column and VisCy's annotation CSV;
- :mod:`.colors` — the categorical palette, colormaps, the legend data (noise grey);
- :mod:`.frames` — the rows of each (FOV, t), lineages and trajectories;
- :mod:`.geometry` — lasso / box / nearest-point hit tests;
- :mod:`.model` — :class:`~.model.CellModel`, the state the docks share (table, selection, highlight,
  neighbours, colours, columns), with psygnal signals.

The names below are re-exported for callers that use several of them (``cells.column_colors``…).
"""

from napari_dynaclr._napari.cellmodel.annotations import (
    UNASSIGNED,
    annotation_categorical,
    assign_class,
    read_annotations_csv,
    write_annotations_csv,
)
from napari_dynaclr._napari.cellmodel.colors import (
    MISSING_COLOR,
    NOISE_COLOR,
    NOISE_LABEL,
    category_key,
    colormap_lut,
    column_colors,
    is_cluster_column,
    palette,
)
from napari_dynaclr._napari.cellmodel.frames import FrameIndex, lineage_tracks, track_trajectory
from napari_dynaclr._napari.cellmodel.geometry import nearest_point, points_in_box, points_in_polygon
from napari_dynaclr._napari.cellmodel.table import (
    ID_COLUMNS,
    KEY_COLUMNS,
    REDUCTION_PREFIXES,
    STATE_COLUMNS,
    add_reduction,
    categorical_codes,
    cell_table,
    column_fingerprint,
    column_values,
    coordinate_columns,
    default_axes,
    fov_mask,
    is_categorical,
    label_classes,
    reduction_prefix,
    selection_column,
    table_fov_names,
)
from napari_dynaclr.errors import ExploreError

__all__ = [
    "ID_COLUMNS", "KEY_COLUMNS", "MISSING_COLOR", "NOISE_COLOR", "NOISE_LABEL", "REDUCTION_PREFIXES", "STATE_COLUMNS",
    "UNASSIGNED", "ExploreError", "FrameIndex", "add_reduction", "annotation_categorical", "assign_class",
    "categorical_codes", "category_key", "cell_table", "colormap_lut", "column_colors", "column_fingerprint",
    "column_values", "coordinate_columns", "default_axes", "fov_mask", "is_categorical", "is_cluster_column",
    "label_classes", "lineage_tracks", "nearest_point", "palette", "points_in_box", "points_in_polygon",
    "read_annotations_csv", "reduction_prefix", "selection_column", "table_fov_names", "track_trajectory",
    "write_annotations_csv",
]
