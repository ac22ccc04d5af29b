"""Automatic beta2 cannot silently fail: the calibration fits any run length or the run refuses."""

from __future__ import annotations

from functools import partial

import pytest
import pytorch_lightning as pl
import torch

from conftest import make_module, make_trainer
from salightning.callbacks import RunSummary
from salightning.edges import LocalVariance
from salightning.losses import SAPixelLoss
from salightning.training import SABalance


def _auto_beta_module(**kwargs):
    # slow optimisers, so that the loss terms stay close to what the calibration measured
    return make_module(
        stage=2,
        sa_target_share=0.15,
        pixel_loss=SAPixelLoss(beta1=0.01, beta2=0.0, edge_extractor=LocalVariance()),
        optimizer_g=partial(torch.optim.Adam, lr=1e-5),
        optimizer_d=partial(torch.optim.Adam, lr=1e-7),
        **kwargs,
    )


def test_a_run_shorter_than_the_calibration_window_holds_the_target_share(tmp_path, patch_loaders, capsys):
    train, _ = patch_loaders  # 4 batches an epoch
    module = _auto_beta_module(sa_calibration_batches=50)
    shares = []

    class Recorder(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            shares.append(float(trainer.callback_metrics["train/sa_share"]))

    make_trainer(tmp_path, max_epochs=5, limit_val_batches=0, callbacks=[Recorder(), RunSummary()]).fit(module, train)
    err, out = capsys.readouterr()[::-1]
    assert "sa_calibration_batches=50 does not fit this run of 20 batches; beta2 is calibrated over the first 2" in err
    assert module.sa_balance.calibrated and len(shares) == 20
    after = shares[2:]
    assert abs(sum(after) / len(after) - 0.15) < 0.02, after
    line = next(l for l in out.splitlines() if "SA share held" in l)
    assert f"{sum(after) / len(after):.3f} mean over 18 batches" in line and "target 0.150" in line, line


def test_a_run_too_short_to_use_a_calibrated_beta2_is_refused_before_training(tmp_path, patch_loaders):
    train, _ = patch_loaders
    module = _auto_beta_module(max_batches=1)
    with pytest.raises(ValueError, match="needs at least 2 training batches .* this run has 1"):
        make_trainer(tmp_path, max_epochs=5, limit_val_batches=0).fit(module, train)
    assert module.batches_seen == 0


def test_the_window_is_kept_when_it_fits_and_gan_max_steps_count_two_per_batch():
    balance = SABalance("calibrate", target_share=0.15, calibration_batches=50)
    assert balance.fit_to_run(None) is None and balance.fit_to_run(100) is None and balance.calibration_batches == 50
    assert "first 9" in balance.fit_to_run(99) and balance.calibration_batches == 9
    assert SABalance("fixed").fit_to_run(1) is None


def test_planned_batches_takes_the_tightest_limit(tmp_path, patch_loaders):
    train, _ = patch_loaders
    seen = {}

    class Probe(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["batches"] = pl_module.planned_batches()
            trainer.should_stop = True

    make_trainer(tmp_path, max_epochs=5, max_steps=6, limit_val_batches=0, callbacks=[Probe()]).fit(make_module(stage=2), train)
    assert seen["batches"] == 3  # 6 optimizer steps = 3 GAN batches, fewer than 5 epochs x 4
