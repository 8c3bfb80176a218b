"""Prediction: plan → batches → one device or several (Lightning) → AnnData store.

- :mod:`~napari_dynaclr.predict.plan` — plate, tracks and settings checked, VisCy's cell order and batches
  (no torch; :mod:`~napari_dynaclr.predict.boc_plan` for Bag-of-Channels models);
- :mod:`~napari_dynaclr.predict.batches` and :mod:`~napari_dynaclr.predict.transforms` — a batch as the model
  receives it (torch);
- :mod:`~napari_dynaclr.predict.single` and :mod:`~napari_dynaclr.predict.lightning` — the backends;
- :mod:`~napari_dynaclr.predict.run` — the whole job (:func:`~napari_dynaclr.predict.run.run_prediction`);
- :mod:`~napari_dynaclr.predict.events` — what a run reports (no torch);
- :mod:`~napari_dynaclr.predict.client` — the napari side of the work process (:mod:`napari_dynaclr.child`).

This package imports none of them: napari's process imports ``client`` and ``events`` alone.
"""
