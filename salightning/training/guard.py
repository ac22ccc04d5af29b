"""Non-finite guard: a batch with a non-finite input, output, loss or gradient is skipped, and a
diverged run is stopped: too many skipped batches in a row, every batch since the previous
validation skipped, or a non-finite validation loss (weights that exploded while staying finite,
e.g. ``lr 1e30``). Every decision is all-reduced, so all DDP ranks agree."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

log = logging.getLogger(__name__)

__all__ = ["NonFiniteGuard", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
    """The run diverged (see :class:`NonFiniteGuard`): it stops, earlier checkpoints stay intact,
    and the validation that found it gives no best checkpoint."""


_DIVERGED = (
    "training has diverged and was stopped; no best checkpoint was taken from this point and the checkpoints written "
    "so far are intact. Lower the learning rate, check the data for NaN/Inf, or enable grad_clip_norm."
)


class NonFiniteGuard:
    """Counts skipped batches and stops a diverged run; saved in checkpoints (:meth:`state_dict`).

    Args:
        max_in_a_row: this many skipped batches in a row raise :class:`TrainingDiverged` (>= 1).

    Example:
        >>> guard = NonFiniteGuard(max_in_a_row=2)
        >>> guard.skipped("loss", batch=0)
        >>> guard.state_dict()
        {'in_a_row': 1, 'total': 1, 'since_validation': 1}
    """

    def __init__(self, max_in_a_row: int = 20) -> None:
        if isinstance(max_in_a_row, bool) or not isinstance(max_in_a_row, int) or max_in_a_row < 1:
            raise ValueError(f"max_nonfinite_in_a_row must be an integer >= 1, got {max_in_a_row!r}")
        self.max_in_a_row = max_in_a_row
        self.in_a_row = 0
        self.total = 0
        self.since_validation = 0  # training batches (trained or skipped) since the last validation

    def skipped(self, what: str, batch: int) -> None:
        """Count a skipped batch; raise :class:`TrainingDiverged` at ``max_in_a_row`` in a row."""
        self.in_a_row += 1
        self.total += 1
        self.since_validation += 1
        log.warning("non-finite %s at batch %d: step skipped (%d in a row)", what, batch, self.in_a_row)
        if self.in_a_row >= self.max_in_a_row:
            raise TrainingDiverged(
                f"{self.in_a_row} non-finite {what} values in a row (batch {batch}): "
                "training has diverged and was stopped. Checkpoints written so far are intact; lower the "
                "learning rate, check the data for NaN/Inf, or enable grad_clip_norm."
            )

    def passed(self) -> None:
        """A batch trained: the run of skipped batches ends."""
        self.in_a_row = 0
        self.since_validation += 1

    def validated(self, loss: Tensor | float | None, batch: int) -> None:
        """Check a validation: raise :class:`TrainingDiverged` when its loss is not finite (the
        generator's outputs are not, though its weights may be: exploded by a too large learning
        rate) or when every training batch since the previous validation was skipped.

        Args:
            loss: the validation loss (a scalar tensor or a number; None: not computed).
            batch: training batches seen, named in the message.
        """
        since, skipped_all = self.since_validation, self._skipped_all()
        self.since_validation = 0
        if loss is not None and not bool(torch.isfinite(torch.as_tensor(loss)).all()):
            raise TrainingDiverged(f"validation loss is {float(torch.as_tensor(loss)):g} after batch {batch}: {_DIVERGED}")
        if skipped_all:
            raise TrainingDiverged(f"every one of the {since} training batches since the previous validation was skipped as non-finite (batch {batch}): {_DIVERGED}")

    def training_ended(self, batch: int, epoch_batches: float) -> None:
        """At the end of training: raise :class:`TrainingDiverged` when every batch of the last
        epoch (``epoch_batches`` long), or every one since the last validation, was skipped (a run
        without validation ends here)."""
        last = min(epoch_batches, self.since_validation)
        if last > 0 and self.in_a_row >= last:
            raise TrainingDiverged(f"the last {int(last)} training batches were all skipped as non-finite (batch {batch}): {_DIVERGED}")

    def _skipped_all(self) -> bool:
        return self.since_validation > 0 and self.in_a_row >= self.since_validation

    def state_dict(self) -> dict[str, int]:
        return {"in_a_row": self.in_a_row, "total": self.total, "since_validation": self.since_validation}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.in_a_row = int(state.get("in_a_row", 0))
        self.total = int(state["total"])
        self.since_validation = int(state.get("since_validation", 0))
