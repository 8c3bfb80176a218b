"""Several devices or nodes through Lightning (``--devices N --strategy ddp``, SLURM via Lightning).

Each rank predicts whole batches (``rank, rank + world, ...``) with the same partition as a single-device
run, so batch-pooled normalisations give identical numbers. Ranks write their batches to a shared
scratch folder; after a barrier, rank 0 assembles them in the original order. Non-zero ranks return
``None`` and write nothing.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import ConfigError


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
    """Run the plan on ``cfg.devices`` × ``cfg.num_nodes`` through a Lightning Trainer.

    Returns ``(features, projections, device)`` on rank 0 and raises :class:`SystemExit` (0) on the
    other ranks once their share is saved.
    """
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, Dataset

    from .engine import EmbeddingAccumulator

    class _Batches(Dataset):
        def __init__(self, indices):
            self.indices = list(indices)

        def __len__(self):
            return len(self.indices)

        def __getitem__(self, k):
            i = self.indices[k]
            return torch.tensor(i), plan.load_batch(i)

    class _Data(pl.LightningDataModule):
        def predict_dataloader(self):
            rank, world = self.trainer.global_rank, self.trainer.world_size
            ds = _Batches(range(rank, plan.n_batches, world))
            return DataLoader(ds, batch_size=None, shuffle=False, num_workers=0)

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
            self.folder = Path(folder)

        def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dl_idx=0):
            i, f, p = prediction
            np.savez(self.folder / f"batch_{i:08d}.npz", features=f, projections=p)
            if on_batch is not None and trainer.global_rank == 0:
                from .engine import BatchResult

                start, stop = plan.batch_bounds(i)
                on_batch(BatchResult(i, start, stop, f, p, plan.n_batches, plan.n_cells, 0.0))

    own_scratch = scratch is None
    folder = Path(scratch) if scratch else _shared_scratch(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    accelerator = {"auto": "auto", "gpu": "gpu", "cuda": "gpu", "cpu": "cpu"}.get(str(cfg.accelerator).lower())
    if accelerator is None:
        raise ConfigError(f"accelerator {cfg.accelerator!r} is not one of auto, cpu, gpu")
    strategy = cfg.strategy
    if strategy == "auto":
        strategy = "ddp"
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
        callbacks=[_Saver(folder)],
    )
    trainer.predict(_Module(), datamodule=_Data(), return_predictions=False)
    trainer.strategy.barrier()
    if trainer.global_rank != 0:
        raise SystemExit(0)
    acc = EmbeddingAccumulator(plan.n_cells, model.config.num_features, model.config.projection_dim)
    for i in range(plan.n_batches):
        f = folder / f"batch_{i:08d}.npz"
        if not f.exists():
            raise RuntimeError(f"batch {i} was not predicted by any rank (missing {f})")
        with np.load(f) as z:
            start, stop = plan.batch_bounds(i)
            acc.features[start:stop] = z["features"]
            acc.projections[start:stop] = z["projections"]
    if own_scratch:
        shutil.rmtree(folder, ignore_errors=True)
    return acc.features, acc.projections, f"{accelerator}x{trainer.world_size}"


def _shared_scratch(cfg) -> Path:
    """A scratch folder every rank agrees on (beside the output, so it is on a shared filesystem)."""
    import hashlib
    import os

    base = Path(cfg.output_path).parent if cfg.output_path else Path(tempfile.gettempdir())
    key = os.environ.get("DYNACLR_RUN_ID") or os.environ.get("SLURM_JOB_ID") or str(os.getppid() if int(os.environ.get("LOCAL_RANK", 0)) else os.getpid())
    tag = hashlib.sha1(f"{cfg.output_path}|{key}".encode()).hexdigest()[:10]
    return base / f".dynaclr-ranks-{tag}"
