"""napari-dynaclr: run, inspect and verify VisCy DynaCLR cell embeddings.

Importing the package is light: torch, lightning, timm and umap load only when a model runs.
"""

__version__ = "0.1.0"
