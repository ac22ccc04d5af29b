"""The GAN LightningModule: both stages through Trainer.fit on real-photo patches, tiny networks."""

from __future__ import annotations

import importlib
import math
from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from conftest import make_module, make_trainer
from torch import nn

from salightning.edges import LocalVariance
from salightning.losses import DCTPerceptualLoss, PerceptualLoss, SAPixelLoss
from salightning.models import GeneratorSpec, constructor_config, generator_spec
from salightning.training import SABalance, SRGANModule, TrainingDiverged


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


def basicsr_order_steps(generator, discriminator, batches, beta1, weight, lr):
    """ESRGAN's update written as BasicSR 1.4.2's ``ESRGANModel.optimize_parameters`` orders it:
    the G step with D frozen (D on HR detached, D on SR), then the D step with five D forwards in
    all and its real and fake halves backpropagated separately. L1 + relativistic GAN, Adam."""
    import torch.nn.functional as F

    opt_g = torch.optim.Adam(generator.parameters(), lr=lr)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr)

    def bce(logits, target):
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))

    for batch in batches:
        lq, gt = batch["lr"], batch["hr"]
        discriminator.requires_grad_(False)
        opt_g.zero_grad()
        output = generator(lq)
        l_pix = beta1 * F.l1_loss(output, gt)
        real_d_pred = discriminator(gt).detach()
        fake_g_pred = discriminator(output)
        l_gan = (bce(real_d_pred - fake_g_pred.mean(), 0.0) + bce(fake_g_pred - real_d_pred.mean(), 1.0)) / 2
        (l_pix + weight * l_gan).backward()
        opt_g.step()
        discriminator.requires_grad_(True)
        opt_d.zero_grad()
        fake_d_pred = discriminator(output).detach()
        real_d_pred = discriminator(gt)
        (bce(real_d_pred - fake_d_pred.mean(), 1.0) * 0.5).backward()
        fake_d_pred = discriminator(output.detach())
        (bce(fake_d_pred - real_d_pred.detach().mean(), 0.0) * 0.5).backward()
        opt_d.step()


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_gan_step_equals_basicsr_order_update(tmp_path, patch_loaders, dtype, tolerance):
    """Three batches from the same init: our step (two D forwards, one graph, backward with
    ``inputs=``) leaves the weights of BasicSR's five-forward order, exactly up to rounding."""
    import copy

    from salightning.losses import SAPixelLoss

    train, _ = patch_loaders
    batches = [{k: v for k, v in b.items() if k in ("lr", "hr")} for b, _ in zip(train, range(3))]
    module = make_module(stage=2, pixel_loss=SAPixelLoss(beta1=0.01), adversarial_weight=0.005,
                         optimizer_g=partial(torch.optim.Adam, lr=1e-3), optimizer_d=partial(torch.optim.Adam, lr=1e-3))
    g_ref, d_ref = copy.deepcopy(module.generator).to(dtype), copy.deepcopy(module.discriminator).to(dtype)
    precision = "64-true" if dtype == torch.float64 else "32-true"
    make_trainer(tmp_path, precision=precision, limit_val_batches=0).fit(module, torch.utils.data.DataLoader(batches, batch_size=None))
    assert module.batches_seen == 3
    basicsr_order_steps(g_ref, d_ref, [{k: v.to(dtype) for k, v in b.items()} for b in batches], 0.01, 0.005, 1e-3)
    for name, ours, ref in (("G", module.generator, g_ref), ("D", module.discriminator, d_ref)):
        moved = max(float((a - b).abs().max()) for a, b in zip(ours.parameters(), ref.parameters()))
        assert moved <= tolerance * max(1.0, max(float(p.abs().max()) for p in ref.parameters())), (name, moved)
    # the reference itself moved the weights by far more than the tolerance
    start = make_module(stage=2).generator
    assert max(float((a.to(dtype) - b).abs().max()) for a, b in zip(start.parameters(), g_ref.parameters())) > 1e-4


def test_generator_objective_reaches_every_generator_parameter(patch_loaders):
    train, _ = patch_loaders
    module = make_module(stage=2)
    batch = next(iter(train))
    sr = module.generator(batch["lr"])
    total, terms = module.objective(sr, batch["hr"], module.pixel_loss.edge_map(batch["hr"]), module.discriminator)
    assert {"pixel", "adversarial", "sa_share"} <= set(terms)
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
    fast = _two_batches(tmp_path / "b", train, compile=True)
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


# ------------------------------------------------------------------ the SA beta2 balance (issue 16)
def tenth_means(values: list[float]) -> list[float]:
    n = len(values) // 10
    return [sum(values[k * n : (k + 1) * n]) / n for k in range(10)]


def test_hold_keeps_the_sa_share_while_the_gan_term_grows(tmp_path, patch_loaders):
    """The adversarial weight ramps up 20x over the run, so the GAN term grows (about 13x): calibrate-once
    lets the SA share fall, hold keeps it at the target (every tenth but the first within 0.02)."""
    train, _ = patch_loaders
    batches = 160
    runs = {}
    for mode in ("calibrate", "hold"):
        module = make_module(
            stage=2, sa_target_share=0.15, sa_beta_mode=mode, sa_calibration_batches=8, sa_hold_batches=8,
            adversarial_weight=0.01, max_batches=batches,
            pixel_loss=SAPixelLoss(beta1=0.01, beta2=0.0, edge_extractor=LocalVariance()),
            # a slow D: the GAN term grows with the ramp rather than with D winning
            optimizer_g=partial(torch.optim.Adam, lr=2e-4), optimizer_d=partial(torch.optim.Adam, lr=1e-6),
        )
        shares, betas = [], []

        class Ramp(pl.Callback):
            def on_train_batch_start(self, trainer, pl_module, *args):
                pl_module.objective.adversarial_weight = 0.01 * (1 + 19 * pl_module.batches_seen / batches)

            def on_train_batch_end(self, trainer, pl_module, *args):
                shares.append(float(trainer.callback_metrics["train/sa_share"]))
                betas.append(float(pl_module.pixel_loss.beta2))

        make_trainer(tmp_path / mode, max_epochs=batches // len(train), limit_val_batches=0, callbacks=[Ramp()]).fit(module, train)
        runs[mode] = (tenth_means(shares), betas)
    calibrated, held = runs["calibrate"][0], runs["hold"][0]
    assert max(abs(m - 0.15) for m in held[1:]) <= 0.02, held
    assert calibrated[-1] < 0.15 - 0.03, calibrated  # the drift that hold removes
    betas = runs["hold"][1][8:]
    assert betas[-1] > 3 * betas[0]  # beta2 followed the growing GAN term ...
    assert max(abs(math.log(b / a)) for a, b in zip(betas, betas[1:])) < 0.5  # ... smoothly


def test_balance_reports_beta2_when_set_and_when_it_moves():
    balance = SABalance("hold", target_share=0.2, calibration_batches=2, hold_batches=2, report_factor=1.5)
    assert balance.update(1.0, 1.0) is None  # still calibrating
    beta, message = balance.update(1.0, 1.0)
    assert beta == pytest.approx(0.25) and "set to 0.25" in message
    assert balance.update(1.0, 1.0)[1] is None  # no move worth a line
    for _ in range(20):
        beta, message = balance.update(10.0, 1.0)  # the other terms grew 10x
        if message is not None:
            break
    assert message is not None and "now" in message and beta > 1.5 * 0.25
    restored = SABalance("hold", target_share=0.2, calibration_batches=2, hold_batches=2)
    restored.load_state_dict(balance.state_dict())
    assert restored.update(3.0, 1.0) == balance.update(3.0, 1.0)


def test_balance_modes_are_checked():
    with pytest.raises(ValueError, match="sa_beta_mode must be one of"):
        make_module(stage=2, sa_target_share=0.15, sa_beta_mode="often")
    with pytest.raises(ValueError, match="'hold' needs sa_target_share"):
        make_module(stage=2, sa_beta_mode="hold")
    module = make_module(stage=2, sa_target_share=0.15, sa_beta_mode="fixed")
    assert not module.sa_balance.active and float(module.pixel_loss.beta2) == 5.0


def test_old_checkpoint_layout_still_loads():
    """Checkpoints of the single-file module: losses at the top level, beta2 named "beta", the
    guard's and the calibration's state as flat keys."""
    module = make_module(stage=2, sa_target_share=0.15)
    state = {k.replace("objective.", "").replace("pixel_loss.beta2", "pixel_loss.beta"): v for k, v in module.state_dict().items()}
    state["pixel_loss.beta"] = torch.tensor(7.0)
    old = {"state_dict": state, "salightning": {"batches_seen": 30, "nonfinite_total": 2, "sa_calibrated": True, "calibration": (3.0, 1.5, 50)}}
    restored = make_module(stage=2, sa_target_share=0.15)
    restored.on_load_checkpoint(old)
    restored.load_state_dict(old["state_dict"])
    assert float(restored.pixel_loss.beta2) == 7.0
    assert restored.batches_seen == 30 and restored.nonfinite_guard.total == 2
    assert restored.sa_balance.calibrated and restored.sa_balance.count == 50 and not restored.sa_balance.active


# ------------------------------------------------------------------ missing perceptual term (issue 16)
def test_gan_stage_with_the_papers_beta1_and_no_perceptual_term_warns_once(tmp_path, patch_loaders):
    train, _ = patch_loaders
    module = make_module(stage=2, pixel_loss=SAPixelLoss(beta1=0.01, beta2=20.0, edge_extractor=LocalVariance()))
    with pytest.warns(UserWarning, match="no perceptual term") as record:
        make_trainer(tmp_path, limit_train_batches=2, max_epochs=2, limit_val_batches=0).fit(module, train)
    messages = [str(w.message) for w in record if "no perceptual term" in str(w.message)]
    assert len(messages) == 1
    assert "configs/sa_esrgan_lv_dct.yaml" in messages[0] and "configs/sa_vsrresfeatgan_lv_dct.yaml" in messages[0]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(stage=1, pixel_loss=SAPixelLoss(beta1=0.01)),  # no GAN term
        dict(stage=2, pixel_loss=SAPixelLoss(beta1=1.0)),  # a pixel weight that holds its own
        dict(stage=2, pixel_loss=SAPixelLoss(beta1=0.01), adversarial_weight=0.0),
        dict(stage=2, pixel_loss=SAPixelLoss(beta1=0.01), perceptual_loss=DCTPerceptualLoss()),
    ],
)
def test_no_balance_warning_where_the_balance_is_kept(kwargs):
    module = make_module(**kwargs)
    assert module.objective.balance_warning(module.is_gan) is None


# ------------------------------------------------------------------ checkpoints and the generator contract
def test_a_python_built_module_records_its_generator_config(tmp_path, patch_loaders):
    train, _ = patch_loaders
    module = make_module(stage=2, ema_decay=0.9)
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    make_trainer(tmp_path, limit_train_batches=2, limit_val_batches=0, enable_checkpointing=True, callbacks=[ckpt_cb]).fit(module, train)
    ckpt = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)  # plain values only: no pickled networks
    config = ckpt["generator_config"]
    assert config["class_path"] == "salightning.models.RRDBNet"
    assert ckpt["hyper_parameters"]["generator"] == config
    assert not any(isinstance(v, nn.Module) for v in ckpt["hyper_parameters"].values())
    module_name, _, name = config["class_path"].rpartition(".")
    rebuilt = getattr(importlib.import_module(module_name), name)(**config["init_args"])
    rebuilt.load_state_dict({k.removeprefix("generator."): v for k, v in ckpt["state_dict"].items() if k.startswith("generator.")})
    lr = next(iter(train))["lr"]
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(lr), module.generator(lr))


def test_a_checkpoint_of_a_module_trained_from_python_predicts_evaluates_and_exports(tmp_path, patch_loaders, photos, capsys):
    """Built and trained from Python (no LightningCLI, Lightning's own checkpoint IO): predict,
    evaluate and export rebuild its generator from the recorded generator_config."""
    from conftest import run_main, save_png

    from salightning.checkpoints import load_generator

    train, _ = patch_loaders
    module = make_module(stage=2, ema_decay=0.9)
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    make_trainer(tmp_path, limit_train_batches=2, limit_val_batches=0, enable_checkpointing=True, callbacks=[ckpt_cb]).fit(module, train)
    ckpt = tmp_path / "ck" / "last.ckpt"
    lr = photos[0][:, 100:132, 100:132]
    save_png(lr, tmp_path / "in" / "lr.png")
    code, _, err = run_main(["predict", "--ckpt_path", ckpt, "--input", tmp_path / "in" / "lr.png", "--output", tmp_path / "out", "--tile", 0], capsys)
    assert code == 0, err[-2000:]
    from salightning.data import read_image

    got = read_image(tmp_path / "out" / "lr.png")
    with torch.no_grad():
        want = module.generator_ema.module.eval()(read_image(tmp_path / "in" / "lr.png")[None])[0].clamp(0, 1)
    assert got.shape == (3, 128, 128)
    assert float((got - want).abs().max()) <= 0.5 / 255 + 1e-6  # the 8-bit PNG of the EMA generator's output
    assert isinstance(load_generator(ckpt), type(module.generator))
    code, _, err = run_main(["export", "--ckpt_path", ckpt, "--output", tmp_path / "g.pth"], capsys)
    assert code == 0, err[-2000:]
    code, _, err = run_main(["evaluate", "--ckpt_path", f"m={ckpt}", "--output", tmp_path / "ev", "--lpips", "none"], capsys)
    assert code == 0, err[-2000:]


class Bare(nn.Module):
    """A generator that keeps neither the contract's attributes nor its constructor arguments."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 3 * 16, 3, padding=1)
        self.shuffle = nn.PixelShuffle(4)

    def forward(self, x):
        return self.shuffle(self.body(x))


def test_the_generator_contract_is_checked_once_with_a_clear_error():
    with pytest.raises(TypeError, match=r"generator Bare has no attribute 'scale'"):
        make_module(stage=1, generator=Bare())
    generator = Bare()
    generator.scale, generator.num_frames, generator.input_upsampled = 4, 1, "no"
    with pytest.raises(TypeError, match=r"Bare.input_upsampled must be a bool, got 'no'"):
        generator_spec(generator)
    generator.input_upsampled = False
    assert generator_spec(generator) == GeneratorSpec(4, 1, False)
    with pytest.raises(TypeError, match=r"test_module.Bare does not keep its constructor argument 'width'"):
        constructor_config(generator)


def test_saving_refuses_a_generator_whose_config_cannot_be_captured(tmp_path, patch_loaders):
    train, _ = patch_loaders
    generator = Bare()
    generator.scale, generator.num_frames, generator.input_upsampled = 4, 1, False
    module = make_module(stage=1, generator=generator)  # builds and trains: only saving needs the config
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    with pytest.raises(TypeError, match="cannot save a checkpoint .* 'width'"):
        make_trainer(tmp_path, limit_train_batches=1, limit_val_batches=0, enable_checkpointing=True, callbacks=[ckpt_cb]).fit(module, train)
    assert module.batches_seen == 1


# ------------------------------------------------------------------ gradient accumulation (issue 22)
class PlainDiscriminator(nn.Module):
    """A discriminator without BatchNorm, so that a batch's logits do not depend on its neighbours."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.LeakyReLU(0.2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))

    def forward(self, x):
        return self.body(x)


def _fit_weights(tmp_path, batches, **kwargs):
    from salightning.losses import AdversarialLoss

    torch.manual_seed(1)
    module = make_module(stage=2, discriminator=PlainDiscriminator(), adversarial_loss=AdversarialLoss("vanilla"), adversarial_weight=0.1, **kwargs)
    make_trainer(tmp_path, precision="64-true", limit_val_batches=0).fit(module, torch.utils.data.DataLoader(batches, batch_size=None))
    return module


def test_accumulating_two_batches_equals_one_batch_twice_the_size(tmp_path, patch_loaders):
    """accumulate=2 over batches of 2 gives the weights of batches of 4 (float64: to rounding)
    for the SA pixel and vanilla GAN terms; batches_seen counts batches, global_step steps."""
    train, _ = patch_loaders
    big = [{k: b[k] for k in ("lr", "hr")} for b in train][:2]
    small = [{k: v[i : i + 2] for k, v in b.items()} for b in big for i in (0, 2)]
    one = _fit_weights(tmp_path / "a", big)
    two = _fit_weights(tmp_path / "b", small, accumulate=2)
    assert (one.batches_seen, two.batches_seen) == (2, 4)
    assert one.trainer.global_step == two.trainer.global_step == 4  # G and D stepped twice in both
    for ours, ref in ((two.generator, one.generator), (two.discriminator, one.discriminator)):
        for a, b in zip(ours.parameters(), ref.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    # and not by accident: one batch of 2 alone steps elsewhere
    alone = _fit_weights(tmp_path / "c", small[:1] + small[2:3])
    assert max(float((a - b).abs().max()) for a, b in zip(alone.generator.parameters(), one.generator.parameters())) > 1e-6


def test_accumulate_is_checked():
    with pytest.raises(ValueError, match="accumulate"):
        make_module(stage=2, accumulate=0)


def _resumed_weights(tmp_path, train, **options):
    """Weights after 2 epochs of 3 batches, uninterrupted and stopped after epoch 0 (mid-accumulation
    with accumulate=2) then resumed from the checkpoint; (uninterrupted, resumed) state dicts."""
    precision = options.pop("precision", "32-true")
    batches = [{k: b[k] for k in ("lr", "hr")} for b in train][:3]
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    full = make_module(stage=2, accumulate=2, ema_decay=0.5, **options)
    make_trainer(tmp_path / "full", precision=precision, max_epochs=2, limit_val_batches=0).fit(full, loader)
    first = make_module(stage=2, accumulate=2, ema_decay=0.5, **options)
    trainer = make_trainer(tmp_path / "first", precision=precision, max_epochs=1, limit_val_batches=0)
    trainer.fit(first, loader)
    trainer.save_checkpoint(tmp_path / "epoch0.ckpt")
    resumed = make_module(stage=2, accumulate=2, ema_decay=0.5, **options)
    make_trainer(tmp_path / "resumed", precision=precision, max_epochs=2, limit_val_batches=0).fit(resumed, loader, ckpt_path=tmp_path / "epoch0.ckpt")
    assert full.batches_seen == resumed.batches_seen == 6
    return full.state_dict(), resumed.state_dict()


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_resume_mid_accumulation_is_bit_identical(tmp_path, patch_loaders, precision):
    full, resumed = _resumed_weights(tmp_path, patch_loaders[0], precision=precision)
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key


@pytest.mark.slow
def test_resume_with_every_speed_option_is_bit_identical(tmp_path, patch_loaders):
    full, resumed = _resumed_weights(tmp_path, patch_loaders[0], precision="bf16-mixed", compile=True, channels_last=True)
    for key in full:
        assert torch.equal(full[key], resumed[key]), key


def test_fp16_loss_scaling_is_refused_with_the_option_named(tmp_path, patch_loaders):
    """CPU turns 16-mixed into bf16: the GradScaler is forced, as 16-mixed on a GPU would have it."""
    from pytorch_lightning.plugins.precision import MixedPrecision

    scaled = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    with pytest.raises(ValueError, match="16-mixed.*bf16-mixed"):
        make_trainer(tmp_path, plugins=[scaled], limit_train_batches=1, limit_val_batches=0).fit(make_module(stage=2), patch_loaders[0])


def test_bf16_mixed_gan_losses_are_float32(tmp_path, patch_loaders):
    seen = {}
    module = make_module(stage=2)
    original = module.objective.adversarial_loss.generator_loss

    def recording(fake, real=None):
        loss = original(fake, real)
        seen["logits"], seen["loss"] = fake.dtype, loss.dtype
        return loss

    module.objective.adversarial_loss.generator_loss = recording
    make_trainer(tmp_path, precision="bf16-mixed", limit_train_batches=1, limit_val_batches=0).fit(module, patch_loaders[0])
    assert seen == {"logits": torch.bfloat16, "loss": torch.float32}


def test_tensorfloat32_callback_holds_for_the_run_and_is_put_back(tmp_path, patch_loaders):
    from salightning.callbacks import TensorFloat32

    seen = []

    class Probe(pl.Callback):
        def on_train_batch_start(self, *args):
            seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    make_trainer(tmp_path, limit_train_batches=1, limit_val_batches=0, callbacks=[TensorFloat32(not before[0]), Probe()]).fit(make_module(stage=1), patch_loaders[0])
    assert seen == [(not before[0], not before[0])]
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
