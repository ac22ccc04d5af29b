"""Callbacks: validation image panels (LR | SR | HR | W), ``last.ckpt`` kept fresh (every N
batches and on SIGTERM / SIGINT), the run's curves PNG, an end-of-run summary, and the RNG
states and W&B run id kept in checkpoints.

Every callback is safe under DDP: collectives run on all ranks, files are written by rank 0."""

from __future__ import annotations

import copy
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from salightning.checkpoints import record_wandb_run_id


def _run_dir(trainer: pl.Trainer) -> Path:
    """The folder of this run (``salightning fit`` sets ``default_root_dir`` to it). Not
    ``trainer.log_dir``: that is a collective under DDP, and a callback may call this on rank 0 only."""
    return Path(trainer.default_root_dir)


#: Height in pixels of the strip of column labels above each panel row.
LABEL_HEIGHT = 14


def _label_strip(texts: list[str], column_width: int, channels: int) -> Tensor:
    """(channels, LABEL_HEIGHT, len(texts) * column_width): white labels on black, one per column."""
    import numpy as np
    from PIL import Image, ImageDraw

    strip = Image.new("L", (column_width * len(texts), LABEL_HEIGHT), 0)
    draw = ImageDraw.Draw(strip)
    fits = max(2, (column_width - 4) // 6)  # PIL's default bitmap font: about 6 pixels a character
    for i, text in enumerate(texts):
        draw.text((i * column_width + 3, 1), text if len(text) <= fits else text[: fits - 1] + "~", fill=255)
    return torch.from_numpy(np.asarray(strip).copy()).float().div(255).expand(channels, -1, -1)


def make_panel(lr: Tensor, sr: Tensor, hr: Tensor, edge_map: Tensor | None, names: list[str] | None = None, labels: bool = True) -> Tensor:
    """One row per image: LR (nearest-upsampled to HR size) | SR | HR | W(hr), each row under a
    strip naming its columns (and the image).

    Args:
        lr: (N, C, h, w) or (N, T, C, H, W) (the centre frame is shown).
        sr, hr: (N, C, H, W) in [0, 1].
        edge_map: (N, C, H, W) in [0, 1] or None (column omitted).
        names: the N image names shown in the LR column's label.
        labels: put the label strip above each row.

    Returns:
        (C, N*(H+L), K*W) image in [0, 1], K = 3 or 4 columns, L = :data:`LABEL_HEIGHT` (0 without labels).
    """
    if lr.ndim == 5:
        lr = lr[:, lr.shape[1] // 2]
    lr_up = F.interpolate(lr.float(), size=hr.shape[-2:], mode="nearest")
    columns = [lr_up, sr.float(), hr.float()]
    if edge_map is not None:
        columns.append(edge_map.float().expand_as(hr))
    rows = list(torch.cat(columns, dim=-1).clamp(0, 1))  # N x (C, H, K*W)
    if labels:
        titles = [f"LR(x{hr.shape[-1] // lr.shape[-1]})", "SR", "HR", "W(HR)"][: len(columns)]
        rows = [
            torch.cat([_label_strip([f"{titles[0]}: {names[i]}" if names else titles[0], *titles[1:]], hr.shape[-1], hr.shape[1]), row], dim=-2)
            for i, row in enumerate(rows)
        ]
    return torch.cat(rows, dim=-2)


class ValidationPanels(pl.Callback):
    """Save LR | SR | HR | W panels of the first validation images after each validation epoch,
    each row under a strip naming its columns and the image.

    PNGs go to ``<run dir>/samples/epoch{E}_batch{B}.png``; with a ``WandbLogger`` the panel is
    also logged as ``val/panels`` (the same fixed images every epoch, so progress is comparable).

    Args:
        num_images: how many validation images (taken from the first validation batches).
        every_n_epochs: save every this many validation epochs.
    """

    def __init__(self, num_images: int = 4, every_n_epochs: int = 1) -> None:
        if num_images < 1 or every_n_epochs < 1:
            raise ValueError(f"num_images and every_n_epochs must be >= 1, got {num_images}, {every_n_epochs}")
        self.num_images = num_images
        self.every_n_epochs = every_n_epochs
        self._rows: list[Tensor] = []
        self._count = 0
        self.last_path: Path | None = None

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows = []
        self._count = 0

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs:
            return
        if self._count >= self.num_images or not isinstance(outputs, Tensor):
            return
        take = self.num_images - self._count
        hr = batch["hr"][:take]
        self._count += hr.shape[0]
        edge_map = pl_module.pixel_loss.edge_map(hr) if hasattr(pl_module, "pixel_loss") else None
        names = batch.get("name")
        names = [names] if isinstance(names, str) else list(names[:take]) if names is not None else None
        self._rows.append(make_panel(batch["lr"][:take], outputs[:take], hr, edge_map, names).cpu())

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._rows or not trainer.is_global_zero:
            return
        widths = {r.shape[-1] for r in self._rows}
        if len(widths) > 1:  # whole validation images of different sizes: pad to the widest
            w = max(widths)
            self._rows = [F.pad(r, (0, w - r.shape[-1])) for r in self._rows]
        panel = torch.cat(self._rows, dim=-2)
        out_dir = _run_dir(trainer) / "samples"
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"epoch{trainer.current_epoch:03d}_batch{getattr(pl_module, 'batches_seen', trainer.global_step):07d}.png"
        from torchvision.utils import save_image

        try:
            save_image(panel, path)
        except OSError as err:
            raise OSError(err.errno, f"could not write validation panel {path} ({err.strerror or err}); checkpoints written so far are intact") from err
        self.last_path = path
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                logger.log_image(key="val/panels", images=[panel], caption=["LR | SR | HR | W(HR)"])


class Preempted(SystemExit):
    """The run was stopped by a signal; the exit status is 128 + the signal number (143 for
    SIGTERM, 130 for SIGINT), as a shell reports a killed job.

    Args:
        code: the exit status.
        message: the line to print, when it was not printed already (``salightning`` prints it).
    """

    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(code)
        self.message = message


def _signal_name(signum: int) -> str:
    return signal.Signals(signum).name


_NOTHING_TRAINED = "nothing was trained, no checkpoint written (earlier checkpoints are intact)"


class LastCheckpoint(pl.Callback):
    """Keep ``last.ckpt`` fresh, and stop on SIGTERM / SIGINT without losing work.

    * every ``every_n_batches`` training batches (batches, not optimizer steps: a GAN batch
      makes two), ``last.ckpt`` is rewritten (atomically, by the run's checkpoint IO);
    * on SIGTERM or SIGINT (a scheduler's preemption, Ctrl-C, ``timeout``; sent to the process
      or to its whole group: the data workers leave them to this process,
      :func:`salightning.data.base.leave_stop_signals_to_the_main_process`) the run stops with
      status 128 + signal (never 0) and one line saying where it stopped:

      - in training, after the batch in progress, with ``last.ckpt`` written;
      - in validation, after the validation batch in progress, with ``last.ckpt`` written; the
        resumed run runs that validation again (:class:`ResumeValidation`). Under DDP (ranks
        may have different numbers of validation batches) or once the validation's metrics are
        logged, after the next training batch instead;
      - in setup or the sanity check, before any training: nothing to save;
      - after training (teardown): the run's checkpoints are complete.

      All DDP ranks agree on where to stop. A second signal exits at once, discarding a
      checkpoint write in progress (the previous file stays).

    ``--ckpt_path last`` resumes from the newest of this file and the other ``last*.ckpt`` files
    of the run. Mid-epoch files resume exactly: the training data order is resumable
    (:class:`salightning.data.EpochSampler`).

    Args:
        every_n_batches: rewrite ``last.ckpt`` every this many training batches (None: only at
            signals and where a ``ModelCheckpoint`` writes it).
        dirpath: folder of the file (default ``<run dir>/checkpoints``).
        filename: the file's name.
    """

    def __init__(self, every_n_batches: int | None = None, dirpath: str | None = None, filename: str = "last.ckpt") -> None:
        if every_n_batches is not None and (isinstance(every_n_batches, bool) or not isinstance(every_n_batches, int) or every_n_batches < 1):
            raise ValueError(f"every_n_batches must be None or an integer >= 1, got {every_n_batches!r}")
        if not filename.endswith(".ckpt") or "/" in filename:
            raise ValueError(f"filename must be a file name ending in .ckpt (found by --ckpt_path last), got {filename!r}")
        self.every_n_batches = every_n_batches
        self.dirpath = dirpath
        self.filename = filename
        self.signum: int | None = None
        self._trainer: pl.Trainer | None = None
        self._previous: dict[int, Any] = {}

    @property
    def path(self) -> Path:
        """Where the file goes: ``dirpath``, else the folder of the run's ``ModelCheckpoint``
        (where ``--ckpt_path last`` looks), else ``<run dir>/checkpoints``."""
        assert self._trainer is not None, "the path is known once fit has started"
        checkpoint = self._trainer.checkpoint_callback
        folder = self.dirpath or getattr(checkpoint, "dirpath", None) or _run_dir(self._trainer) / "checkpoints"
        return Path(folder) / self.filename

    # -- the handlers: from setup to teardown -----------------------------------------------------

    def _listen(self) -> None:
        """Install the handlers (again): Lightning registers its own after setup, which end the
        run with status 0 and no checkpoint. The handlers found first are restored at the end."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(sig) != self._on_signal:
                self._previous.setdefault(sig, signal.signal(sig, self._on_signal))

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            return
        # A second signal: stop now. A checkpoint being written is discarded, its target untouched.
        io = self._trainer.strategy.checkpoint_io if self._trainer is not None else None
        partial = getattr(io, "in_flight", None)
        if partial is not None:
            Path(partial).unlink(missing_ok=True)
        os._exit(128 + signum)

    def _stop_requested(self, trainer: pl.Trainer, collective: bool = True) -> bool:
        # All ranks decide together; where ranks may run different numbers of steps (evaluation
        # batches under DDP) the decision waits for a point they all reach.
        if not collective:
            return self.signum is not None and trainer.world_size == 1
        return trainer.strategy.reduce_boolean_decision(self.signum is not None, all=False)

    def _stop(self, trainer: pl.Trainer, where: str, unsaved: str | None = None) -> None:
        """Write ``last.ckpt`` (unless ``unsaved`` says why there is nothing to save), print one
        line and raise :class:`Preempted`."""
        if unsaved is None:
            trainer.save_checkpoint(self.path, weights_only=False)  # the full state, to resume from
        signum = self.signum or signal.SIGTERM
        if trainer.is_global_zero:
            saved = unsaved or f"checkpoint written to {self.path.resolve()} (resume with --ckpt_path last)"
            print(f"salightning: stopped by {_signal_name(signum)} {where}; {saved}", file=sys.stderr, flush=True)
        self.signum = None  # stopping now: a later hook must not stop again
        raise Preempted(128 + signum)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._trainer = trainer
            self.signum = None
            self._listen()

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._listen()
        if self._stop_requested(trainer):
            self._stop(trainer, "before training started", _NOTHING_TRAINED)

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._stop_requested(trainer):
            self._stop(trainer, "during the sanity check, before training started", _NOTHING_TRAINED)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._listen()
        if self._stop_requested(trainer):
            self._stop(trainer, "before training started", _NOTHING_TRAINED)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        stop = self._stop_requested(trainer)
        done = trainer.fit_loop.epoch_loop.batch_progress.total.processed
        if stop:
            self._stop(trainer, f"after batch {done}")
        if self.every_n_batches and done % self.every_n_batches == 0:
            trainer.save_checkpoint(self.path, weights_only=False)  # the full state, to resume from

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._stop_in_validation(trainer, f", after its batch {batch_idx}")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_in_validation(trainer, "")

    def _stop_in_validation(self, trainer: pl.Trainer, after: str) -> None:
        # Before the epoch's metrics are logged: the resumed run validates again and logs them once.
        # A signal noticed later (or under DDP) stops after the next training batch (Lightning does not
        # resume exactly from a checkpoint written between epochs) or, after the last, at teardown.
        if not self._stop_requested(trainer, collective=False):
            return
        if trainer.sanity_checking:
            self._stop(trainer, "during the sanity check, before training started", _NOTHING_TRAINED)
        else:
            self._stop(trainer, f"during validation (epoch {trainer.current_epoch}){after}")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._restore()
        if self.signum is not None:
            self._stop(trainer, "after training had ended", "the run's checkpoints are complete")


def validation_due(trainer: pl.Trainer) -> bool:
    """Whether a validation follows the training batch just finished, by Lightning's rule
    (``check_val_every_n_epoch``, ``val_check_interval``, the epoch's last batch)."""
    loop = trainer.fit_loop.epoch_loop
    in_epoch = loop.batch_progress.current.processed
    every = trainer.check_val_every_n_epoch
    if not trainer.enable_validation or in_epoch == 0 or (every is not None and (trainer.current_epoch + 1) % every):
        return False
    if in_epoch >= trainer.num_training_batches:
        return True
    count = in_epoch if every is not None else loop.batch_progress.total.processed
    return trainer.val_check_batch != float("inf") and count % int(trainer.val_check_batch) == 0


class ResumeValidation(pl.Callback):
    """Run, after a resume, the validation the checkpoint's run had not finished.

    A checkpoint written after the last training batch of an epoch (``LastCheckpoint``, a
    signal, SLURM's HPC checkpoint, a ``ModelCheckpoint`` every N steps) or during the
    validation that follows it records ``checkpoint["salightning"]["validation_pending"]``;
    Lightning would resume with the next epoch and skip that validation, so the epoch would have
    no metrics row, panel or best-checkpoint candidate. This callback runs it first, at the
    same epoch and step as the uninterrupted run did. ``salightning fit`` adds it to every run.
    """

    def __init__(self) -> None:
        self._validated_at: int | None = None  # training batches done when a validation last ended
        self._pending_epoch: int | None = None  # the epoch of a resumed checkpoint's unfinished validation
        self._loops_before_validation: dict[str, Any] | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        # The training loops' state a checkpoint written during the coming validation records:
        # resumed from it, Lightning goes on as from the end of this batch (from the middle of a
        # validation its loops would resume out of step).
        self._loops_before_validation = copy.deepcopy(trainer.fit_loop.state_dict()) if validation_due(trainer) else None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._validated_at = trainer.fit_loop.epoch_loop.batch_progress.total.processed
            self._loops_before_validation = None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        done = trainer.fit_loop.epoch_loop.batch_progress.total.processed
        pending = trainer.state.fn == "fit" and validation_due(trainer) and self._validated_at != done
        checkpoint.setdefault("salightning", {})["validation_pending"] = bool(pending)
        if pending and trainer.validating and self._loops_before_validation is not None and "loops" in checkpoint:
            checkpoint["loops"]["fit_loop"] = copy.deepcopy(self._loops_before_validation)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        pending = checkpoint.get("salightning", {}).get("validation_pending")
        self._pending_epoch = int(checkpoint["epoch"]) if pending else None
        self._loops_before_validation = copy.deepcopy(checkpoint.get("loops", {}).get("fit_loop")) if pending else None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending_epoch is None:
            return
        # What Lightning's training loop does at a validation point, in the checkpoint's epoch
        # (Lightning has already counted it done). The checkpoint may be from the middle of this
        # validation, so the loop starts afresh.
        epochs = trainer.fit_loop.epoch_progress.current
        resumed_in = epochs.completed
        epochs.completed = self._pending_epoch
        self._pending_epoch = None
        val_loop = trainer.fit_loop.epoch_loop.val_loop
        val_loop.restarting = False
        trainer.validating = True
        try:
            val_loop.run()
            if resumed_in > epochs.completed:
                # That validation ended the epoch: so do the epoch's end hooks Lightning skipped
                # (the ModelCheckpoint that keeps the best saves there), monitoring callbacks last.
                trainer.training = True
                monitoring = (pl.callbacks.Checkpoint, pl.callbacks.EarlyStopping)
                for callback in trainer.callbacks:
                    if callback is not self and not isinstance(callback, monitoring):
                        callback.on_train_epoch_end(trainer, pl_module)
                pl_module.on_train_epoch_end()
                for callback in trainer.callbacks:
                    if isinstance(callback, monitoring):
                        callback.on_train_epoch_end(trainer, pl_module)
        finally:
            trainer.training = True
            epochs.completed = resumed_in


class TensorFloat32(pl.Callback):
    """TF32 matrix multiplications and convolutions on CUDA (Ampere and newer) for the run, put
    back as they were at its end: about 2-8x faster fp32 steps for a 10-bit mantissa in the
    products (sums stay fp32). No effect on a CPU. Add it to ``trainer.callbacks``.

    Args:
        enabled: TF32 on (True) or off (False) for the run.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.saved: tuple[bool, bool] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.enabled

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.saved is not None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved
            self.saved = None


class RunSummary(pl.Callback):
    """Print where a finished run left its checkpoints, sample images and metrics, and, with an
    automatic beta2, the SA share of the generator loss it held (mean of ``train/sa_share`` over
    the batches trained after beta2 was set)."""

    def __init__(self) -> None:
        self._share_sum: Tensor | float = 0.0
        self._share_count = 0
        self._share_set = False

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        balance = getattr(pl_module, "sa_balance", None)
        self._share_set = balance is not None and balance.mode != "fixed" and balance.calibrated

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        share = trainer.callback_metrics.get("train/sa_share")
        if self._share_set and share is not None:
            self._share_sum = self._share_sum + share.detach()  # a device tensor: no host sync per batch
            self._share_count += 1

    def _share_line(self, pl_module: pl.LightningModule) -> str | None:
        balance = getattr(pl_module, "sa_balance", None)
        if balance is None or balance.mode == "fixed":
            return None
        if not balance.calibrated:
            return (
                f"  SA share held   : none, beta2 was never set ({balance.count} of {balance.calibration_batches} "
                "calibration batches ran)"
            )
        held = f"{float(self._share_sum) / self._share_count:.3f} mean over {self._share_count} batches" if self._share_count else "not measured"
        return (
            f"  SA share held   : {held} (target {balance.target_share:.3f}, sa_beta_mode {balance.mode}, "
            f"beta2 {float(pl_module.pixel_loss.beta2):.4g})"
        )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        lines = ["", "salightning: run finished"]
        share = self._share_line(pl_module)
        if share is not None:
            lines.append(share)
        for ckpt in trainer.checkpoint_callbacks:
            path = getattr(ckpt, "best_model_path", "")
            if path and getattr(ckpt, "monitor", None):
                score = ckpt.best_model_score
                lines.append(f"  best checkpoint : {Path(path).resolve()}" + (f" ({ckpt.monitor}={float(score):.5g})" if score is not None else ""))
            elif path:  # no monitor: its one kept file is the latest state
                lines.append(f"  last checkpoint : {Path(path).resolve()}")
            if getattr(ckpt, "last_model_path", ""):
                lines.append(f"  last checkpoint : {Path(ckpt.last_model_path).resolve()}")
        for cb in trainer.callbacks:
            if isinstance(cb, ValidationPanels) and cb.last_path is not None:
                lines.append(f"  sample images   : {cb.last_path.parent.resolve()}")
            if isinstance(cb, TrainingCurves) and cb.path is not None:
                lines.append(f"  curves          : {cb.path.resolve()}")
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.CSVLogger):
                lines.append(f"  metrics (CSV)   : {Path(logger.log_dir).resolve() / 'metrics.csv'}")
            elif isinstance(logger, pl.loggers.WandbLogger):
                lines.append(f"  W&B run         : {getattr(logger.experiment, 'url', None) or logger.save_dir}")
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if metrics:
            lines.append("  last validation : " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
        print("\n".join(lines), flush=True)


class TrainingCurves(pl.Callback):
    """Write the run's curves (:func:`salightning.curves.plot_metrics`: losses, SA share and beta2,
    learning rates, validation metrics) to ``<run dir>/curves.png`` when training ends, from the
    ``metrics.csv`` of the run's CSV loggers. ``salightning fit`` adds it to every run.

    Short runs get training rows: when ``trainer.log_every_n_steps`` would give fewer than
    ``min_rows`` of them, it is lowered (with a line saying so).

    Args:
        min_rows: the fewest training rows a run of known length logs.
    """

    def __init__(self, min_rows: int = 20) -> None:
        if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 1:
            raise ValueError(f"min_rows must be an integer >= 1, got {min_rows!r}")
        self.min_rows = min_rows
        self.path: Path | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        planned = pl_module.planned_batches() if hasattr(pl_module, "planned_batches") else None
        every = trainer.log_every_n_steps
        if planned is None or every <= 1 or planned // every >= self.min_rows:
            return
        trainer.log_every_n_steps = max(1, planned // self.min_rows)
        if trainer.is_global_zero:
            print(
                f"salightning: training rows every {trainer.log_every_n_steps} batches (trainer.log_every_n_steps={every} "
                f"would log {planned // every} of this run's {planned} batches)",
                file=sys.stderr,
                flush=True,
            )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        files = []
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.CSVLogger):
                logger.save()  # rows still buffered
                files.append(Path(logger.log_dir) / "metrics.csv")
        files = [f for f in files if f.is_file()]
        if not files:
            return
        from salightning.curves import CURVES_FILE, plot_metrics

        try:
            self.path = plot_metrics(files, _run_dir(trainer) / CURVES_FILE, str(_run_dir(trainer).resolve()))
        except ModuleNotFoundError:
            print("salightning: no curves.png: matplotlib is not installed (pip install matplotlib)", file=sys.stderr, flush=True)
        except ValueError:
            pass  # nothing logged yet (e.g. stopped before the first row)


def rng_states() -> dict[str, Any]:
    """The global RNG states (torch, CUDA, numpy, Python) in types ``torch.load(weights_only=True)`` reads."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned (CUDA states only on as many devices as were saved)."""
    import random

    import numpy as np

    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


class RNGStates(pl.Callback):
    """Save the global RNG states in every checkpoint and restore them when a fit resumes, so a
    resumed run draws the same random numbers as an uninterrupted one (bit-exact resume).

    The states go to ``checkpoint["salightning"]["rng_states"]``; they are applied when training
    starts (after the checkpoint is restored, before the first DataLoader iterator draws a
    seed), so loading a checkpoint for inference leaves the RNGs alone. ``salightning fit``
    adds this callback to every run."""

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint.setdefault("salightning", {})["rng_states"] = rng_states()

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._to_restore = checkpoint.get("salightning", {}).get("rng_states")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._to_restore is not None:
            set_rng_states(self._to_restore)
            self._to_restore = None


class WandbRunId(pl.Callback):
    """Record the W&B run id in every checkpoint (``checkpoint["salightning"]["wandb_run_id"]``),
    so that ``--ckpt_path`` also continues the same W&B run. ``salightning fit`` adds it to every run."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.WandbLogger) and logger.version is not None:
                record_wandb_run_id(checkpoint, logger.version)
