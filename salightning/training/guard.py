"""Non-finite guard: a batch with a non-finite input, output, loss or gradient is skipped, and a
run with too many in a row is stopped. Every decision is all-reduced, so all DDP ranks agree."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

__all__ = ["NonFiniteGuard", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses: the run stops, earlier checkpoints stay intact."""


class NonFiniteGuard:
    """Counts skipped batches and stops a diverged run; saved in checkpoints (:meth:`state_dict`).

    Args:
        max_in_a_row: this many skipped batches in a row raise :class:`TrainingDiverged` (>= 1).

    Example:
        >>> guard = NonFiniteGuard(max_in_a_row=2)
        >>> guard.skipped("loss", batch=0)
        >>> guard.state_dict()
        {'in_a_row': 1, 'total': 1}
    """

    def __init__(self, max_in_a_row: int = 20) -> None:
        if isinstance(max_in_a_row, bool) or not isinstance(max_in_a_row, int) or max_in_a_row < 1:
            raise ValueError(f"max_nonfinite_in_a_row must be an integer >= 1, got {max_in_a_row!r}")
        self.max_in_a_row = max_in_a_row
        self.in_a_row = 0
        self.total = 0

    def skipped(self, what: str, batch: int) -> None:
        """Count a skipped batch; raise :class:`TrainingDiverged` at ``max_in_a_row`` in a row."""
        self.in_a_row += 1
        self.total += 1
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

    def state_dict(self) -> dict[str, int]:
        return {"in_a_row": self.in_a_row, "total": self.total}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.in_a_row = int(state.get("in_a_row", 0))
        self.total = int(state["total"])
