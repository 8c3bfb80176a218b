"""Evaluating embeddings as VisCy does, without Qt or torch: annotation joins, linear classifiers, temporal
smoothness, nearest neighbours and representative samples.

Layer: above :mod:`napari_dynaclr.core`, beside :mod:`napari_dynaclr.verify`, below the CLI and the napari
plugin. Submodules import scikit-learn/scipy lazily inside functions where they are heavy; ``pynndescent`` (numba)
is imported only for indexes above the exact-search limit.
"""
