"""The automatic beta2 of the SA pixel loss: the SA part a chosen share of the generator loss.

With ``rest`` = every generator term but the SA part and ``u = mean(W * rho)`` (the SA part for
beta2 = 1), the share ``beta2 * u / (rest + beta2 * u)`` equals ``s`` when

    beta2 = s / (1 - s) * rest / u.

Modes:

* ``fixed``: beta2 stays as configured (the paper's way).
* ``calibrate``: ``rest`` and ``u`` are averaged over the first ``calibration_batches``
  batches, beta2 is set once and frozen.
* ``hold``: calibrated like that, then beta2 follows running means of ``rest`` and ``u`` (a
  horizon of ``hold_batches`` batches), times a slow correction that integrates the share's
  error, so the share holds while the other terms change (e.g. a growing GAN term).

The measured values must be the same on every rank (the module all-reduces them first), so
all DDP ranks choose the same beta2. The state is saved in checkpoints (:meth:`state_dict`).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

from salightning.checks import check_at_least

__all__ = ["BetaMode", "SABalance"]

#: How beta2 of the SA pixel loss is chosen.
BetaMode = Literal["fixed", "calibrate", "hold"]


class SABalance:
    """Chooses beta2 so that the SA part is ``target_share`` of the generator loss.

    Args:
        mode: "fixed", "calibrate" or "hold" (see the module docstring).
        target_share: the share, in (0, 1) (the paper's SA part is about 0.15); None for "fixed".
        calibration_batches: batches averaged before beta2 is first set (>= 1).
        hold_batches: horizon of the running means in "hold" mode (>= 1).
        report_factor: a new beta2 is reported (:meth:`update`'s message) when it has moved by more
            than this factor since the last report.

    Example:
        >>> balance = SABalance("calibrate", target_share=0.2, calibration_batches=2)
        >>> balance.update(rest=1.0, sa_unit=0.5)
        >>> round(balance.update(rest=1.0, sa_unit=0.5)[0], 6)
        0.5
    """

    def __init__(
        self,
        mode: BetaMode = "fixed",
        target_share: float | None = None,
        calibration_batches: int = 50,
        hold_batches: int = 100,
        report_factor: float = 1.5,
    ) -> None:
        if mode not in get_args(BetaMode):
            raise ValueError(f"sa_beta_mode must be one of {get_args(BetaMode)}, got {mode!r}")
        if mode != "fixed" and target_share is None:
            raise ValueError(f"sa_beta_mode {mode!r} needs sa_target_share (e.g. 0.15); for a fixed beta2 (or none) set sa_beta_mode: fixed")
        if target_share is not None and not 0.0 < target_share < 1.0:
            raise ValueError(f"sa_target_share must be in (0, 1), got {target_share!r}")
        check_at_least(calibration_batches, "calibration_batches", 1)
        check_at_least(hold_batches, "hold_batches", 1)
        if not report_factor > 1.0:
            raise ValueError(f"report_factor must be > 1, got {report_factor!r}")
        self.mode = mode
        self.target_share = target_share
        self.calibration_batches = calibration_batches
        self.hold_batches = hold_batches
        self.report_factor = report_factor
        self.count = 0
        self.rest = 0.0  # sums while calibrating, then running means
        self.sa_unit = 0.0
        self.correction = 1.0
        self.beta = 0.0
        self.reported = 0.0
        self.calibrated = mode == "fixed"

    def fit_to_run(self, run_batches: int | None) -> str | None:
        """Make the calibration fit a run of ``run_batches`` training batches (None: unbounded).

        A window longer than half the run is shortened to a tenth of it (at least 1 batch), so
        that beta2 is set early and the share holds for most of the run; returns the line
        saying so (None when nothing changed).

        Raises:
            ValueError: a run of fewer than 2 batches, which cannot train with a calibrated beta2.
        """
        if self.mode == "fixed" or self.calibrated or run_batches is None or self.calibration_batches <= run_batches // 2:
            return None
        if run_batches < 2:
            raise ValueError(
                f"sa_target_share={self.target_share} needs at least 2 training batches (calibrate beta2 on the first, "
                f"train with it after) but this run has {run_batches}; train longer or set sa_beta_mode: fixed"
            )
        window = max(1, run_batches // 10)
        message = (
            f"salightning: sa_calibration_batches={self.calibration_batches} does not fit this run of {run_batches} batches; "
            f"beta2 is calibrated over the first {window} instead"
        )
        self.calibration_batches = window
        return message

    @property
    def active(self) -> bool:
        """Whether :meth:`update` wants this batch's values."""
        return self.mode == "hold" or (self.mode == "calibrate" and not self.calibrated)

    def _target(self) -> float:
        s = self.target_share
        return s / (1.0 - s) * self.rest / self.sa_unit * self.correction

    def update(self, rest: float, sa_unit: float) -> tuple[float, str | None] | None:
        """Take one batch's ``rest`` and ``u`` (all-reduced means); return the new beta2 and a
        line to print (None when there is nothing to report), or None while beta2 is not set.

        Raises:
            ValueError: the edge maps of the calibration batches are all zero.
        """
        if not self.active:
            return None
        self.count += 1
        if not self.calibrated:
            self.rest += rest
            self.sa_unit += sa_unit
            if self.count < self.calibration_batches:
                return None
            if self.sa_unit <= 0:
                raise ValueError("sa_target_share: the edge maps of the first batches are all zero; cannot calibrate beta2")
            self.rest /= self.count
            self.sa_unit /= self.count
            self.calibrated = True
        else:
            # The share this batch had with the beta2 it was trained with: its error, integrated slowly,
            # removes what the running means miss (their lag and the ratio-of-means bias).
            share = self.beta * sa_unit / max(rest + self.beta * sa_unit, 1e-12)
            step = 1.0 / self.hold_batches
            self.correction *= math.exp(step * (self.target_share - share) / self.target_share)
            self.rest += step * (rest - self.rest)
            self.sa_unit += step * (sa_unit - self.sa_unit)
            if self.sa_unit <= 0:
                return None
        self.beta = self._target()
        message = None
        if self.reported == 0.0 or max(self.beta / self.reported, self.reported / self.beta) > self.report_factor:
            first = self.reported == 0.0
            self.reported = self.beta
            message = (
                f"salightning: SA beta2 {'set' if first else 'now'} to {self.beta:.4g} after {self.count} batches "
                f"(mode {self.mode}, target share {self.target_share:.3f})"
            )
        return self.beta, message

    def state_dict(self) -> dict[str, float | int | bool | str]:
        return {
            "mode": self.mode,
            "count": self.count,
            "rest": self.rest,
            "sa_unit": self.sa_unit,
            "correction": self.correction,
            "beta": self.beta,
            "reported": self.reported,
            "calibrated": self.calibrated,
        }

    def load_state_dict(self, state: dict) -> None:
        if "calibration" in state:  # a checkpoint of the calibrate-once module: (rest sum, u sum, count)
            rest, sa_unit, self.count = state["calibration"]
            self.calibrated = bool(state["sa_calibrated"])
            if not self.calibrated or self.count == 0:
                self.rest, self.sa_unit = rest, sa_unit
                return
            self.rest, self.sa_unit = rest / self.count, sa_unit / self.count
            if self.target_share is not None and self.sa_unit > 0:
                self.beta = self.reported = self._target()
            return
        self.count = int(state["count"])
        self.rest, self.sa_unit = float(state["rest"]), float(state["sa_unit"])
        self.correction, self.beta, self.reported = float(state["correction"]), float(state["beta"]), float(state["reported"])
        self.calibrated = bool(state["calibrated"])
