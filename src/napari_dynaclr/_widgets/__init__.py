"""napari dock widgets (Qt). Importing this package is light: no torch, lightning, timm or umap."""
