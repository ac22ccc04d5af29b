"""The GAN LightningModule: both stages through Trainer.fit on real-photo patches, tiny networks."""

from __future__ import annotations

from functools import partial

import pytest
import pytorch_lightning as pl
import torch

from salightning.edges import LocalVariance
from salightning.losses import AdversarialLoss, PerceptualLoss, SAPixelLoss
from salightning.models import RRDBNet, VGGStyleDiscriminator
from salightning.training import SRGANModule, TrainingDiverged


def tiny_generator() -> RRDBNet:
    return RRDBNet(num_features=8, num_blocks=1, growth_channels=4, scale=4)


def tiny_discriminator() -> VGGStyleDiscriminator:
    return VGGStyleDiscriminator(num_features=8, input_size=32)


def make_module(stage: int = 2, **kwargs) -> SRGANModule:
    pl.seed_everything(0)
    defaults = dict(
        generator=tiny_generator(),
        pixel_loss=SAPixelLoss(beta1=1.0, beta2=5.0, edge_extractor=LocalVariance()),
        optimizer_g=partial(torch.optim.Adam, lr=2e-3),
        optimizer_d=partial(torch.optim.Adam, lr=2e-3),
    )
    if stage == 2:
        defaults.update(discriminator=tiny_discriminator(), adversarial_loss=AdversarialLoss("relativistic"), adversarial_weight=0.005)
    defaults.update(kwargs)
    return SRGANModule(**defaults)


def make_trainer(tmp_path, **kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def pixel_val_loss(module: SRGANModule, loader) -> float:
    module.eval()
    with torch.no_grad():
        losses = [module.pixel_loss(module(b["lr"]), b["hr"]) for b in loader]
    module.train()
    return float(torch.stack(losses).mean())


def test_stage1_fit_reduces_pixel_loss(tmp_path, patch_loaders):
    train, val = patch_loaders
    module = make_module(stage=1)
    before = pixel_val_loss(module, train)
    trainer = make_trainer(tmp_path, max_epochs=6)
    trainer.fit(module, train, val)
    after = pixel_val_loss(module, train)
    assert after < 0.7 * before, (before, after)
    assert module.batches_seen == 6 * len(train)
    assert trainer.global_step == module.batches_seen  # one optimizer step per stage-1 batch
    assert "val/loss" in trainer.callback_metrics and "val/psnr" in trainer.callback_metrics


def test_stage2_fit_trains_both_networks_and_counts_batches(tmp_path, patch_loaders):
    train, val = patch_loaders
    module = make_module(stage=2)
    d_before = [p.detach().clone() for p in module.discriminator.parameters()]
    before = pixel_val_loss(module, train)
    trainer = make_trainer(tmp_path, max_epochs=4)
    trainer.fit(module, train, val)
    assert pixel_val_loss(module, train) < before
    assert any(not torch.equal(a, b) for a, b in zip(d_before, module.discriminator.parameters()))
    assert module.batches_seen == 4 * len(train)
    assert trainer.global_step == 2 * module.batches_seen  # G and D steps both count
    logged = trainer.callback_metrics
    for key in ("train/pixel_sa", "train/pixel_plain", "train/sa_share", "train/adversarial", "train/d_real", "train/d_fake", "train/lr_g", "train/lr_d"):
        assert key in logged, key
    share = float(logged["train/sa_share"])
    assert 0 < share < 1


def test_generator_then_discriminator_order(tmp_path, patch_loaders):
    train, _ = patch_loaders
    order: list[str] = []

    def recording_adam(name):
        def factory(params):
            opt = torch.optim.Adam(params, lr=1e-3)
            opt.register_step_post_hook(lambda *_: order.append(name))
            return opt

        return factory

    module = make_module(stage=2, optimizer_g=recording_adam("G"), optimizer_d=recording_adam("D"))
    make_trainer(tmp_path, limit_train_batches=3, limit_val_batches=0).fit(module, train)
    assert order == ["G", "D"] * 3


def test_discriminator_gets_no_gradient_from_generator_step(patch_loaders):
    train, _ = patch_loaders
    module = make_module(stage=2)
    batch = next(iter(train))
    sr = module.generator(batch["lr"])
    total, _ = module.objective(sr, batch["hr"], module.pixel_loss.edge_map(batch["hr"]), module.discriminator)
    # in training the D parameters are frozen by toggle_optimizer; here check the G loss reaches G
    total.backward()
    assert all(p.grad is not None for p in module.generator.parameters())


def test_lr_halves_at_batch_milestones(tmp_path, patch_loaders):
    train, _ = patch_loaders
    module = make_module(stage=2, lr_milestones=[2, 5], optimizer_g=partial(torch.optim.Adam, lr=1e-3), optimizer_d=partial(torch.optim.Adam, lr=4e-3))
    lrs = []

    class Recorder(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, *args):
            opt_g, opt_d = pl_module.optimizers()
            lrs.append((opt_g.param_groups[0]["lr"], opt_d.param_groups[0]["lr"]))

    make_trainer(tmp_path, limit_train_batches=4, max_epochs=2, limit_val_batches=0, callbacks=[Recorder()]).fit(module, train)
    g = [round(a, 8) for a, _ in lrs]
    d = [round(b, 8) for _, b in lrs]
    # LR used by each batch: milestone N means the LR changes after N batches
    assert g == [1e-3, 1e-3, 5e-4, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 2.5e-4]
    assert d == [4 * x for x in g] or d == [round(4 * x, 8) for x in g]


def test_resume_continues_batch_counter_schedule_and_weights(tmp_path, patch_loaders):
    train, _ = patch_loaders
    kwargs = dict(lr_milestones=[3], ema_decay=0.9)
    # uninterrupted: 2 epochs of 4 batches
    full = make_module(stage=2, **kwargs)
    make_trainer(tmp_path / "a", max_epochs=2, limit_val_batches=0).fit(full, train)
    # interrupted after 1 epoch, then resumed
    first = make_module(stage=2, **kwargs)
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    make_trainer(tmp_path / "b", max_epochs=1, limit_val_batches=0, enable_checkpointing=True, callbacks=[ckpt_cb]).fit(first, train)
    resumed = make_module(stage=2, **kwargs)
    trainer = make_trainer(tmp_path / "c", max_epochs=2, limit_val_batches=0)
    trainer.fit(resumed, train, ckpt_path=str(tmp_path / "ck" / "last.ckpt"))
    assert resumed.batches_seen == full.batches_seen == 8
    opt_g, opt_d = resumed.optimizers()
    assert opt_g.param_groups[0]["lr"] == pytest.approx(full.optimizers()[0].param_groups[0]["lr"])
    assert opt_g.param_groups[0]["lr"] == pytest.approx(2e-3 * 0.5)
    for a, b in zip(full.generator.state_dict().values(), resumed.generator.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(full.generator_ema.state_dict().values(), resumed.generator_ema.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_auto_beta_reaches_target_share(tmp_path, patch_loaders):
    train, _ = patch_loaders
    # slow optimisers, so that the loss terms stay close to what the calibration measured
    module = make_module(
        stage=2,
        sa_target_share=0.15,
        sa_calibration_batches=4,
        pixel_loss=SAPixelLoss(beta1=0.01, beta2=0.0, edge_extractor=LocalVariance()),
        optimizer_g=partial(torch.optim.Adam, lr=1e-5),
        optimizer_d=partial(torch.optim.Adam, lr=1e-7),
    )
    shares = []

    class Recorder(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            shares.append(float(trainer.callback_metrics["train/sa_share"]))

    make_trainer(tmp_path, max_epochs=3, limit_val_batches=0, callbacks=[Recorder()]).fit(module, train)
    assert module.sa_balance.calibrated
    beta = float(module.pixel_loss.beta2)
    assert beta > 0
    assert shares[0] == 0.0  # beta2 starts at 0 during calibration
    after = shares[4:]
    assert abs(sum(after) / len(after) - 0.15) < 0.02, after


def test_nonfinite_loss_skips_then_stops(tmp_path, patch_loaders, photos):
    train, _ = patch_loaders
    module = make_module(stage=2, max_nonfinite_in_a_row=3)

    class NaNInjector(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 0 and batch_idx == 1:
                batch["hr"][0, 0, 0, 0] = float("nan")
            if trainer.current_epoch >= 1:
                batch["hr"][:] = float("nan")

    g_before = None

    class Snapshot(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            nonlocal g_before
            g_before = [p.detach().clone() for p in pl_module.generator.parameters()]

    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    trainer = make_trainer(tmp_path, max_epochs=3, limit_val_batches=0, enable_checkpointing=True, callbacks=[NaNInjector(), Snapshot(), ckpt_cb])
    with pytest.raises(TrainingDiverged, match="non-finite"):
        batches = [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in b.items()} for b in train]
        trainer.fit(module, torch.utils.data.DataLoader(batches, batch_size=None))
    assert module.nonfinite_guard.total == 1 + 3
    # weights untouched by the skipped batches, and the checkpoint of epoch 0 is intact and loadable
    for a, b in zip(g_before, module.generator.parameters()):
        assert torch.equal(a, b)
    ckpt = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)
    bad = [k for k, v in ckpt["state_dict"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
    assert not bad, bad


def test_checkpoint_has_no_frozen_vgg_weights(tmp_path, patch_loaders):
    train, _ = patch_loaders
    module = make_module(stage=2, perceptual_loss=PerceptualLoss(layers="conv2_2", weights="random"))
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    make_trainer(tmp_path, limit_train_batches=1, limit_val_batches=0, enable_checkpointing=True, callbacks=[ckpt_cb]).fit(module, train)
    keys = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)["state_dict"].keys()
    assert any(k.startswith("generator.") for k in keys)
    assert not any(k.startswith("perceptual_loss") for k in keys), [k for k in keys if "perceptual" in k][:5]


def test_ema_generator_used_for_inference(patch_loaders):
    module = make_module(stage=1, ema_decay=0.5)
    assert module.inference_generator() is module.generator_ema.module
    assert not any(p.requires_grad for p in module.generator_ema.parameters())


def test_bad_arguments_name_the_option():
    with pytest.raises(ValueError, match="adversarial_weight"):
        make_module(stage=2, adversarial_weight=-1.0)
    with pytest.raises(ValueError, match="lr_milestones"):
        make_module(stage=2, lr_milestones=[10, 5])
    with pytest.raises(ValueError, match="sa_target_share"):
        make_module(stage=2, sa_target_share=1.5)
    with pytest.raises(ValueError, match="ema_decay"):
        make_module(stage=1, ema_decay=1.0)


def test_bf16_mixed_stage2_keeps_edge_maps_fp32(tmp_path, patch_loaders):
    train, _ = patch_loaders
    module = make_module(stage=2)
    dtypes = []
    original = module.pixel_loss.edge_map

    def recording_edge_map(hr):
        w = original(hr)
        dtypes.append(w.dtype)
        return w

    module.pixel_loss.edge_map = recording_edge_map
    trainer = make_trainer(tmp_path, precision="bf16-mixed", limit_train_batches=2, limit_val_batches=0)
    trainer.fit(module, train)
    assert module.batches_seen == 2 and module.nonfinite_guard.total == 0
    assert dtypes and all(d == torch.float32 for d in dtypes)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_grad_clip_norm_bounds_the_update(tmp_path, patch_loaders):
    train, _ = patch_loaders
    module = make_module(stage=1, grad_clip_norm=1e-3, optimizer_g=partial(torch.optim.SGD, lr=1.0))
    before = torch.cat([p.detach().flatten().clone() for p in module.generator.parameters()])
    make_trainer(tmp_path, limit_train_batches=1, limit_val_batches=0).fit(module, train)
    after = torch.cat([p.detach().flatten() for p in module.generator.parameters()])
    # one SGD step of lr 1 moves the weights by exactly the clipped gradient norm
    assert float((after - before).norm()) == pytest.approx(1e-3, rel=1e-3)


def _two_batches(tmp_path, train, **kwargs) -> dict:
    module = make_module(stage=2, **kwargs)
    make_trainer(tmp_path, limit_train_batches=2, limit_val_batches=0).fit(module, train)
    return {k: v.detach().float().contiguous() for k, v in module.generator.state_dict().items()}


def test_channels_last_gives_the_same_updates(tmp_path, patch_loaders):
    train, _ = patch_loaders
    plain = _two_batches(tmp_path / "a", train)
    fast = _two_batches(tmp_path / "b", train, channels_last=True)
    for key in plain:
        torch.testing.assert_close(fast[key], plain[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.slow
def test_compiled_generator_gives_the_same_updates(tmp_path, patch_loaders):
    train, _ = patch_loaders
    plain = _two_batches(tmp_path / "a", train)
    fast = _two_batches(tmp_path / "b", train, compile_generator=True)
    for key in plain:
        torch.testing.assert_close(fast[key], plain[key], rtol=1e-3, atol=1e-4, msg=key)


def test_nonfinite_loss_from_finite_input_is_skipped(tmp_path, patch_loaders):
    """A generator that outputs NaN on one batch (finite input): the batch is skipped, counted,
    and neither the weights, the EMA nor the discriminator's statistics are touched by it."""
    train, _ = patch_loaders
    module = make_module(stage=2, ema_decay=0.5)
    calls = {"n": 0}

    def poison(_module, _inputs, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] == 2 else output

    module.generator.register_forward_hook(poison)
    snapshots = []

    class Snapshot(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            snapshots.append([p.detach().clone() for p in pl_module.generator_ema.parameters()])

    make_trainer(tmp_path, limit_train_batches=3, limit_val_batches=0, callbacks=[Snapshot()]).fit(module, train)
    assert module.nonfinite_guard.total == 1 and module.batches_seen == 3
    for a, b in zip(snapshots[0], snapshots[1]):  # batch 2 skipped: EMA unchanged
        assert torch.equal(a, b)
    assert all(torch.isfinite(p).all() for p in module.generator.parameters())
    assert all(torch.isfinite(b).all() for b in module.discriminator.buffers() if b.is_floating_point())
