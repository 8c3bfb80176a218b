"""The headless core: settings, plates, tracks, patches, normalisation, stores and reductions.

No Qt, no napari, no torch: everything here runs in a plain Python process, and importing it is light
(``tests/test_architecture.py`` enforces it).
"""
