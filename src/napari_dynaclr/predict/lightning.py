"""Several devices or nodes through Lightning (``--devices N --strategy ddp``, SLURM via Lightning).

Each rank predicts whole batches (``rank, rank + world, ...``) with the same partition as a single-device
run, so batch-pooled normalisations give identical numbers. Each rank reads its batches ahead in
background threads (like the single-device engine). Ranks write their batches to a scratch folder beside
the output (chosen by rank 0, broadcast); after a barrier, rank 0 assembles them in the original order and
writes the store. Non-zero ranks exit (``SystemExit(0)``) without writing anything. Multi-node runs use
Lightning's cluster environments (SLURM, torchrun / TorchElastic, ...) unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_dynaclr.core.output import ScratchFolder
from napari_dynaclr.errors import ConfigError


def device_count(cfg) -> int:
    devices = cfg.devices
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if devices in ("auto", -1, "-1", None):
        if str(cfg.accelerator).lower() in ("gpu", "cuda", "auto"):
            import torch

            return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1
        return 1
    try:
        return int(devices)
    except (TypeError, ValueError):
        raise ConfigError(f"devices must be an integer, a list or 'auto', got {devices!r}") from None


def wants_lightning(cfg) -> bool:
    return device_count(cfg) * int(cfg.num_nodes) > 1


def predict_with_lightning(plan, model, cfg, on_batch=None, scratch: str | Path | None = None):
    """Run the plan on ``cfg.devices`` x ``cfg.num_nodes`` through a Lightning Trainer.

    Returns ``(features, projections, device)`` on rank 0 and raises :class:`SystemExit` (0) on the
    other ranks once their share is saved. Each rank reads its batches ahead in ``cfg.num_workers``
    threads (as the single-device engine does); the scratch folder is chosen by rank 0 and broadcast,
    so every launcher (Lightning's, torchrun, SLURM) agrees on it.
    """
    import warnings

    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, IterableDataset

    from napari_dynaclr.predict.batches import EmbeddingAccumulator, read_ahead

    class _Batches(IterableDataset):
        def __init__(self, indices):
            self.indices = list(indices)

        def __iter__(self):
            for i, x in read_ahead(plan, self.indices, cfg.num_workers):
                yield torch.tensor(i), x

    class _Data(pl.LightningDataModule):
        def predict_dataloader(self):
            rank, world = self.trainer.global_rank, self.trainer.world_size
            ds = _Batches(range(rank, plan.n_batches, world))
            return DataLoader(ds, batch_size=None, num_workers=0, pin_memory=False)

    class _Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model

        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            i, x = batch
            feats, projs = self.model(x)
            return int(i), feats.float().cpu().numpy(), projs.float().cpu().numpy()

    class _Saver(pl.callbacks.BasePredictionWriter):
        def __init__(self, folder):
            super().__init__(write_interval="batch")
            self.scratch = ScratchFolder(folder)

        @property
        def folder(self) -> Path:
            return self.scratch.path

        def setup(self, trainer, pl_module, stage=None):
            self.scratch = ScratchFolder(trainer.strategy.broadcast(str(self.folder), src=0)).create()

        def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dl_idx=0):
            i, f, p = prediction
            self.scratch.save_npz(f"batch_{i:08d}.npz", features=f, projections=p)  # complete files only
            if on_batch is not None and trainer.global_rank == 0:
                from napari_dynaclr.predict.batches import BatchResult

                start, stop = plan.batch_bounds(i)
                on_batch(BatchResult(i, start, stop, f, p, plan.n_batches, plan.n_cells, 0.0))

    folder = Path(scratch) if scratch else _shared_scratch(cfg)
    accelerator = {"auto": "auto", "gpu": "gpu", "cuda": "gpu", "cpu": "cpu"}.get(str(cfg.accelerator).lower())
    if accelerator is None:
        raise ConfigError(f"accelerator {cfg.accelerator!r} is not one of auto, cpu, gpu")
    strategy = cfg.strategy
    if strategy == "auto":
        strategy = "ddp"
    saver = _Saver(folder)
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=strategy,
        precision=cfg.precision,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=True,
        use_distributed_sampler=False,
        callbacks=[saver],
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Couldn't infer the batch indices.*")
        warnings.filterwarnings("ignore", message=".*IterableDataset.*__len__.*")
        trainer.predict(_Module(), datamodule=_Data(), return_predictions=False)
    trainer.strategy.barrier()
    if trainer.global_rank != 0:
        raise SystemExit(0)
    folder = saver.folder
    acc = EmbeddingAccumulator(plan.n_cells, model.config.num_features, model.config.projection_dim)
    try:
        for i in range(plan.n_batches):
            f = folder / f"batch_{i:08d}.npz"
            if not f.exists():
                raise RuntimeError(f"batch {i} was not predicted by any rank (missing {f})")
            with np.load(f) as z:
                start, stop = plan.batch_bounds(i)
                acc.features[start:stop] = z["features"]
                acc.projections[start:stop] = z["projections"]
    finally:
        if scratch is None:
            saver.scratch.remove()
    return acc.features, acc.projections, f"{accelerator}x{trainer.world_size}"


def _shared_scratch(cfg) -> Path:
    """A fresh scratch folder beside the output (a filesystem every node sees; a leftover of the output the next
    run on it removes); rank 0's choice is broadcast to the other ranks."""
    return ScratchFolder.beside(cfg.output_path).path
