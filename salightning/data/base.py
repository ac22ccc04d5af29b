"""The DataModule base both SR datamodules share: loaders, the resumable training sampler,
unrepeated evaluation under DDP, and the checks of the loader settings."""

from __future__ import annotations

import os
import signal
import threading

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from salightning.checks import check_at_least
from salightning.data.sampling import EpochSampler

__all__ = ["ResumableDataLoader", "SRDataModule", "leave_stop_signals_to_the_main_process"]

# Which splits each Lightning stage needs (None or an unknown stage: all of them).
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


def _end_on_sigterm_from_parent() -> None:
    parent = os.getppid()
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
            os._exit(0)  # as PyTorch's own worker handler: the main process ends a worker that does not exit


def leave_stop_signals_to_the_main_process(worker_id: int) -> None:
    """``worker_init_fn`` of the loaders: a data worker outlives SIGINT and SIGTERM sent to the whole
    process group (Ctrl-C in a terminal, ``timeout``, ``kill -- -PGID``, scancel), which would
    otherwise kill it first and crash the run; the main process finishes its batch, writes a
    checkpoint and ends the workers itself (:class:`~salightning.callbacks.LastCheckpoint`).

    SIGINT is ignored. SIGTERM is blocked and waited for by a thread: sent by the main process (its
    last resort for a worker that does not exit) it ends the worker, sent by anyone else it is
    ignored. A worker whose main process is gone ends by PyTorch's watchdog.

    Args:
        worker_id: the worker's index (unused; the ``worker_init_fn`` signature).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):  # macOS: no sender to tell apart
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return
    # Blocked before any other thread starts in the worker: threads inherit the mask, so only the waiter takes it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=_end_on_sigterm_from_parent, name="salightning-sigterm", daemon=True).start()


class ResumableDataLoader(DataLoader):
    """The training DataLoader: its :class:`~salightning.data.EpochSampler` starts where the
    trainer's batch count stands, so a mid-epoch resume is exact with no state of its own to save.
    The empty ``state_dict`` tells Lightning so (it would warn that the loader is not resumable)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class SRDataModule(pl.LightningDataModule):
    """DataLoader plumbing shared by :class:`~salightning.data.ImageSRDataModule` and
    :class:`~salightning.data.VideoSRDataModule`.

    Subclasses fill ``self.datasets`` ("train", "val", "test") in :meth:`setup`, for the splits
    :meth:`splits_of` names. Training draws ``samples_per_epoch`` items per epoch through an
    :class:`~salightning.data.EpochSampler` that resumes where the trainer's batch count stands;
    under DDP each validation/test item is evaluated by exactly one process.

    Args:
        batch_size: training batch size (incomplete last batches are dropped).
        val_batch_size: validation/test batch size.
        num_workers: DataLoader worker processes.
        samples_per_epoch: training samples per epoch (None: one pass, at least one batch).
        pin_memory: pin batches in memory when a CUDA device is present.
        seed: seed of the sample order and of each item's crop and augmentation.

    Raises:
        ValueError: a batch size or ``samples_per_epoch`` that is not an integer >= 1,
            ``num_workers`` < 0, or ``samples_per_epoch`` smaller than ``batch_size``.
    """

    def __init__(
        self,
        batch_size: int,
        val_batch_size: int,
        num_workers: int,
        samples_per_epoch: int | None,
        pin_memory: bool,
        seed: int,
    ) -> None:
        super().__init__()
        check_at_least(batch_size, "batch_size", 1)
        check_at_least(val_batch_size, "val_batch_size", 1)
        check_at_least(num_workers, "num_workers", 0)
        if samples_per_epoch is not None:
            check_at_least(samples_per_epoch, "samples_per_epoch", 1)
            if samples_per_epoch < batch_size:
                raise ValueError(
                    f"samples_per_epoch={samples_per_epoch} is smaller than batch_size={batch_size}: "
                    "an epoch would have no full batch"
                )
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.num_workers = num_workers
        self.samples_per_epoch = samples_per_epoch
        self.pin_memory = pin_memory
        self.seed = seed
        self.datasets: dict[str, Dataset] = {}

    @staticmethod
    def splits_of(stage: str | None) -> tuple[str, ...]:
        """The splits Lightning's ``stage`` needs: "fit" -> train and val, "validate" -> val,
        "test"/"predict" -> test; None or another stage -> all three."""
        return _STAGE_SPLITS.get(stage, ("train", "val", "test"))

    def _dataset(self, split: str) -> Dataset:
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        return self.datasets[split]

    def _loader(self, dataset: Dataset, batch_size: int, sampler: Sampler | None, drop_last: bool) -> DataLoader:
        loader = ResumableDataLoader if isinstance(sampler, EpochSampler) else DataLoader
        return loader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            drop_last=drop_last,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=leave_stop_signals_to_the_main_process,
            # Worker seeds from the loader's own generator, not the global RNG: a resumed run's
            # first iterator would otherwise draw once more than the uninterrupted run did.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self._dataset("train")
        num_items = len(dataset)
        # Default: one pass over the items, but never less than one full batch.
        length = self.samples_per_epoch or max(num_items, self.batch_size)
        sampler = EpochSampler(num_items, length, self.seed, progress=self._samples_trained if self.trainer is not None else None)
        return self._loader(dataset, self.batch_size, sampler, drop_last=True)

    def _samples_trained(self) -> int:
        """Samples this process has trained on in the run (restored from a checkpoint on resume)."""
        return self.trainer.fit_loop.epoch_loop.batch_progress.total.processed * self.batch_size

    def _eval_sampler(self, dataset: Dataset) -> Sampler | None:
        # Under DDP, each image is evaluated by exactly one process: Lightning's default
        # DistributedSampler would pad with repeats and bias the metrics. A DistributedSampler
        # subclass is left in place by Lightning.
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

            return UnrepeatedDistributedSampler(dataset, shuffle=False)
        return None

    def val_dataloader(self) -> DataLoader:
        dataset = self._dataset("val")
        return self._loader(dataset, self.val_batch_size, self._eval_sampler(dataset), drop_last=False)

    def test_dataloader(self) -> DataLoader:
        dataset = self._dataset("test")
        return self._loader(dataset, self.val_batch_size, self._eval_sampler(dataset), drop_last=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

