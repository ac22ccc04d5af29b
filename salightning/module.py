"""The generic GAN super-resolution LightningModule (both training stages of the SA-loss paper).

One module trains any generator with any discriminator and any loss recipe; image and video
models differ only in the batches they receive (``lr`` of shape (B, C, h, w) or (B, T, C, H, W),
``hr`` of shape (B, C, H, W)). The networks, the losses and the edge extractor arrive as
constructor arguments (LightningCLI ``class_path``), which is what makes the SA loss independent
of the network, as the paper claims.

Stages (section IV-B of the paper):

* **Stage 1, PSNR-oriented** (``discriminator=None``): the generator alone, pixel loss
  (plus any perceptual / TV terms that are configured, normally none).
* **Stage 2, GAN**: per batch one generator step, then one discriminator step (ESRGAN's order);
  the generator loss is eq. 16/18 (ESRGAN) or eq. 20/22 (VSRResFeatGAN):
  ``adversarial_weight * L_GAN + perceptual_weight * L_percep + L_pixel`` where ``L_pixel`` is
  the (SA) pixel loss of eq. 12/13 with its own coefficients α (plain) and β (SA).

Counting: ``trainer.global_step`` counts *optimizer steps* (2 per GAN batch, 1 per stage-1
batch). This module keeps its own batch counter, ``batches_seen``, saved in checkpoints; LR
milestones, ``max_batches`` and the SA-β calibration are counted in batches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.core.mixins.hparams_mixin import _given_hyperparameters
import torch
from torch import Tensor, nn
from torch.optim import Adam, Optimizer
from torch.optim.lr_scheduler import MultiStepLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import salightning
from salightning import metrics
from salightning._checks import (
    check_at_least,
    check_factory_lr,
    check_fraction,
    check_non_negative,
    check_optimizer_lr,
    check_positive,
)
from salightning.losses import AdversarialLoss, SAPixelLoss, total_variation
from salightning.checkpoints import load_pretrained

log = logging.getLogger(__name__)

_NETWORK_ARGS = ["generator", "discriminator", "pixel_loss", "adversarial_loss", "perceptual_loss", "optimizer_g", "optimizer_d"]

OptimizerCallable = Callable[[Iterable], Optimizer]


def _rng_states() -> dict[str, Any]:
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


def _set_rng_states(states: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses: the run stops, earlier checkpoints stay intact."""


def _resolve_package_path(path: str, option: str) -> Path:
    """``package:assets/x.pth`` names a file shipped inside salightning (so configs work from
    any folder); any other value is an ordinary path."""
    p = Path(salightning.__file__).parent / path[len("package:") :] if path.startswith("package:") else Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{option}: file {str(p)!r} does not exist")
    return p


def _default_adam(params: Iterable) -> Optimizer:
    # ESRGAN's stage-2 recipe (BasicSR): Adam, lr 1e-4, betas (0.9, 0.99).
    return Adam(params, lr=1e-4, betas=(0.9, 0.99))


class SRGANModule(pl.LightningModule):
    """Two-stage GAN super-resolution with a spatially adaptive pixel loss.

    Args:
        generator: maps ``lr`` to ``sr`` (B, C, H, W); exposes ``scale`` (SR factor).
        pixel_loss: the (SA) pixel loss, eq. 8/9 (plain, ``beta=0``) or eq. 12/13 (SA).
        discriminator: maps (B, C, H, W) to logits (B, 1). ``None`` selects stage 1.
        adversarial_loss: GAN loss (vanilla eq. 14, relativistic, hinge, LS); stage 2 only.
        adversarial_weight: α of eq. 16/18 (ESRGAN 0.005) or α₁ of eq. 20/22 (VSRResFeatGAN 0.001).
        perceptual_loss: eq. 15 (or the poster's SA perceptual loss); ``None`` for none.
        perceptual_weight: 1 in eq. 16/18, α₂ = 0.998 in eq. 20/22.
        tv_weight: weight of the total-variation regulariser (SRGAN); 0 disables it.
        optimizer_g: optimizer factory for the generator (``None``: Adam, lr 1e-4, betas 0.9/0.99,
            ESRGAN's recipe; the paper: Adam, lr 1e-4).
        optimizer_d: optimizer factory for the discriminator (same default).
        lr_milestones: batches at which both learning rates are multiplied by ``lr_gamma``
            (the paper: 50k, 100k, 200k, 300k).
        lr_gamma: the factor (the paper halves: 0.5).
        ema_decay: decay of a generator-only exponential moving average (ESRGAN: 0.999); when
            set, the EMA generator is used for validation, test, predict and export.
        sa_target_share: if set (e.g. 0.15, the paper's share), β of the pixel loss is chosen
            automatically so that the SA part is this share of the generator loss, measured
            over the first ``sa_calibration_batches`` batches, then frozen (saved in checkpoints).
        sa_calibration_batches: number of batches measured for ``sa_target_share``.
        pretrained_generator: checkpoint to initialise the generator from (a stage-1 Lightning
            checkpoint, or the ESRGAN authors' / BasicSR's released files); ``package:...``
            names a file shipped inside salightning (``package:assets/quickstart_psnr_x4.pth``).
        grad_clip_norm: clip each network's gradient norm to this value (Trainer's clipping
            flags raise in manual optimisation, so the module clips).
        max_nonfinite_in_a_row: a non-finite loss skips the batch; this many in a row stop the run.
        max_batches: stop after this many training batches (``max_steps`` counts optimizer steps).
        metric_y_channel: compute validation PSNR/SSIM on the MATLAB BT.601 Y channel (as papers
            do) rather than on RGB.
        channels_last: keep the networks and image batches in channels-last memory format
            (faster convolutions on GPUs with tensor cores).
        compile_generator: compile the generator in place with ``torch.compile`` (the module
            itself is not compiled: toggling ``requires_grad`` breaks compiled graphs).
    """

    def __init__(
        self,
        generator: nn.Module,
        pixel_loss: SAPixelLoss | None = None,
        discriminator: nn.Module | None = None,
        adversarial_loss: AdversarialLoss | None = None,
        adversarial_weight: float = 0.005,
        perceptual_loss: nn.Module | None = None,
        perceptual_weight: float = 1.0,
        tv_weight: float = 0.0,
        optimizer_g: OptimizerCallable | None = None,
        optimizer_d: OptimizerCallable | None = None,
        lr_milestones: list[int] | None = None,
        lr_gamma: float = 0.5,
        ema_decay: float | None = None,
        sa_target_share: float | None = None,
        sa_calibration_batches: int = 50,
        pretrained_generator: str | None = None,
        grad_clip_norm: float | None = None,
        max_nonfinite_in_a_row: int = 20,
        max_batches: int | None = None,
        metric_y_channel: bool = True,
        channels_last: bool = False,
        compile_generator: bool = False,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        for name, value in (
            ("adversarial_weight", adversarial_weight),
            ("perceptual_weight", perceptual_weight),
            ("tv_weight", tv_weight),
        ):
            check_non_negative(value, f"model.{name}")
        check_fraction(lr_gamma, "model.lr_gamma")
        if grad_clip_norm is not None:
            check_positive(grad_clip_norm, "model.grad_clip_norm")
        check_at_least(sa_calibration_batches, "model.sa_calibration_batches", 1)
        if max_batches is not None:
            check_at_least(max_batches, "model.max_batches", 1)
        for name, factory in (("optimizer_g", optimizer_g), ("optimizer_d", optimizer_d)):
            check_factory_lr(factory, f"model.{name}")
        if lr_milestones is not None and list(lr_milestones) != sorted(lr_milestones):
            raise ValueError(f"lr_milestones must be increasing, got {lr_milestones!r}")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay!r}")
        if sa_target_share is not None and not 0.0 < sa_target_share < 1.0:
            raise ValueError(f"sa_target_share must be in (0, 1), got {sa_target_share!r}")
        if sa_target_share is not None and (pixel_loss is None or pixel_loss.edge_extractor is None):
            raise ValueError("sa_target_share needs a pixel_loss with an edge_extractor (the SA part to calibrate)")
        if discriminator is not None and adversarial_loss is None:
            adversarial_loss = AdversarialLoss("vanilla")
        if max_nonfinite_in_a_row < 1:
            raise ValueError(f"max_nonfinite_in_a_row must be >= 1, got {max_nonfinite_in_a_row!r}")

        self.generator = generator
        self.discriminator = discriminator
        self.pixel_loss = pixel_loss if pixel_loss is not None else SAPixelLoss(alpha=1.0)
        self.adversarial_loss = adversarial_loss
        self.perceptual_loss = perceptual_loss
        self.adversarial_weight = adversarial_weight
        self.perceptual_weight = perceptual_weight
        self.tv_weight = tv_weight
        self.optimizer_g = optimizer_g or _default_adam
        self.optimizer_d = optimizer_d or _default_adam
        self.lr_milestones = list(lr_milestones or [])
        self.lr_gamma = lr_gamma
        self.sa_target_share = sa_target_share
        self.sa_calibration_batches = sa_calibration_batches
        self.grad_clip_norm = grad_clip_norm
        self.max_nonfinite_in_a_row = max_nonfinite_in_a_row
        self.max_batches = max_batches
        self.metric_y_channel = metric_y_channel
        self.channels_last = channels_last
        self.compile_generator = compile_generator

        if pretrained_generator is not None:
            load_pretrained(self.generator, _resolve_package_path(pretrained_generator, "pretrained_generator"))
        self.generator_ema: AveragedModel | None = None
        if ema_decay is not None:
            self.generator_ema = AveragedModel(self.generator, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
            self.generator_ema.requires_grad_(False)

        # Training state that Lightning does not keep: saved by on_save_checkpoint.
        self.batches_seen = 0
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self._calib_rest = 0.0
        self._calib_sa_unit = 0.0
        self._calib_count = 0
        self.sa_calibrated = sa_target_share is None
        # Validation / test means (torchmetrics states: not saved in checkpoints).
        self.eval_metrics = nn.ModuleDict({"val": nn.ModuleDict(), "test": nn.ModuleDict()})
        # Under LightningCLI the hyper-parameters are the config (class paths, plain values), which
        # lets load_from_checkpoint and salightning.predict rebuild the networks; from Python they
        # are the objects themselves, which belong in the state dict, not pickled into hparams.
        from_cli = _given_hyperparameters.get() is not None
        self.save_hyperparameters(ignore=None if from_cli else _NETWORK_ARGS)

    # ------------------------------------------------------------------ helpers
    @property
    def is_gan(self) -> bool:
        """True in stage 2 (a discriminator is being trained)."""
        return self.discriminator is not None

    @property
    def scale(self) -> int:
        """The generator's SR factor (used for the metrics' border crop)."""
        return int(getattr(self.generator, "scale", 4))

    def inference_generator(self) -> nn.Module:
        """The generator used outside training: the EMA one when EMA is on."""
        return self.generator_ema.module if self.generator_ema is not None else self.generator

    def forward(self, lr: Tensor) -> Tensor:
        """Super-resolve ``lr`` ((B, C, h, w) or (B, T, C, H, W)) with the inference generator."""
        return self.inference_generator()(lr)

    def _discriminator_input(self, x: Tensor) -> Tensor:
        # A fixed-size discriminator (ESRGAN's 128x128) still scores whole validation images: centre crop.
        size = getattr(self.discriminator, "input_size", None)
        if size is None or getattr(self.discriminator, "adaptive_pool", False):
            return x
        h, w = x.shape[-2:]
        if (h, w) == (size, size):
            return x
        if h < size or w < size:
            raise ValueError(
                f"the discriminator takes {size}x{size} inputs but the images are {h}x{w}; "
                "use larger images or a discriminator with adaptive_pool: true"
            )
        top, left = (h - size) // 2, (w - size) // 2
        return x[..., top : top + size, left : left + size]

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        if self.compile_generator and stage == "fit":
            self.generator.compile()

    def _memory_format(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    # ------------------------------------------------------------------ losses
    def generator_losses(self, sr: Tensor, hr: Tensor, edge_map: Tensor | None) -> dict[str, Tensor]:
        """All terms of the generator loss of the current stage, and their sum under ``"total"``:
        eq. 16/18 (ESRGAN: α·L_GAN + L_percep + L_pixel) or eq. 20/22 (VSRResFeatGAN:
        α₁·L_GAN + α₂·L_percep + L_pixel), with L_pixel of eq. 8/9 or 12/13.

        ``pixel_sa`` is the SA part β·mean(W·ρ) of eq. 12/13 and ``pixel_plain`` its plain part.
        """
        out: dict[str, Tensor] = {}
        pix = self.pixel_loss(sr, hr, edge_map=edge_map)
        out["pixel"] = pix.total
        out["pixel_plain"] = pix.plain
        out["pixel_sa"] = pix.sa
        out["pixel_sa_unit"] = pix.sa_unit
        total = pix.total
        if self.perceptual_loss is not None and self.perceptual_weight > 0:
            if getattr(self.perceptual_loss, "uses_edge_map", False):
                out["perceptual"] = self.perceptual_loss(sr, hr, edge_map=edge_map)
            else:
                out["perceptual"] = self.perceptual_loss(sr, hr)
            total = total + self.perceptual_weight * out["perceptual"]
        if self.tv_weight > 0:
            out["tv"] = total_variation(sr)
            total = total + self.tv_weight * out["tv"]
        if self.is_gan:
            fake_logits = self.discriminator(self._discriminator_input(sr))
            real_logits = None
            if self.adversarial_loss.kind == "relativistic":
                with torch.no_grad():
                    real_logits = self.discriminator(self._discriminator_input(hr))
            out["adversarial"] = self.adversarial_loss.generator_loss(fake_logits, real_logits)
            out["d_fake_logit_g"] = fake_logits.detach()
            total = total + self.adversarial_weight * out["adversarial"]
        out["total"] = total
        out["sa_share"] = pix.sa.detach() / total.detach().abs().clamp_min(1e-12)
        return out

    def discriminator_losses(self, sr: Tensor, hr: Tensor, fake_logits_g: Tensor) -> dict[str, Tensor]:
        """D step, backpropagating its real and fake terms separately (BasicSR's fix for DDP with
        BatchNorm discriminators). ``fake_logits_g`` are D's logits on ``sr`` from the G step
        (same D parameters), reused as the detached fake side of the real term."""
        real_logits = self.discriminator(self._discriminator_input(hr))
        loss_real = self.adversarial_loss.discriminator_real_loss(real_logits, fake_logits_g)
        self.manual_backward(loss_real)
        fake_logits = self.discriminator(self._discriminator_input(sr.detach()))
        loss_fake = self.adversarial_loss.discriminator_fake_loss(fake_logits, real_logits.detach())
        self.manual_backward(loss_fake)
        return {
            "d_real": loss_real.detach(),
            "d_fake": loss_fake.detach(),
            "d_real_logit": real_logits.detach().mean(),
            "d_fake_logit": fake_logits.detach().mean(),
        }

    # ------------------------------------------------------------------ training
    def _all_finite(self, *tensors: Tensor) -> bool:
        """True when every value of every tensor is finite, on every rank (one host sync).

        Every rank must take the same decision, or DDP's gradient all-reduce hangs."""
        finite = bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())
        return self.trainer.strategy.reduce_boolean_decision(finite, all=True)

    def _skip_nonfinite(self, what: str) -> None:
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        log.warning("non-finite %s at batch %d: step skipped (%d in a row)", what, self.batches_seen, self.nonfinite_in_a_row)
        if self.nonfinite_in_a_row >= self.max_nonfinite_in_a_row:
            raise TrainingDiverged(
                f"{self.nonfinite_in_a_row} non-finite {what} values in a row (batch {self.batches_seen}): "
                "training has diverged and was stopped. Checkpoints written so far are intact; lower the "
                "learning rate, check the data for NaN/Inf, or enable grad_clip_norm."
            )

    def _step(self, optimizer: Any, loss: Tensor) -> bool:
        """Clip and step; False (no step, gradients dropped) when the step would be non-finite.

        A non-finite loss gives non-finite gradients, and a finite loss can too (overflow in
        backward); one Adam step with them makes every weight NaN. So the gradient norm is
        checked (one fused norm, one host sync). Under fp16 AMP the GradScaler skips steps with
        overflowing gradients by itself; there the loss is checked, so that NaN losses are still
        counted and never reach the EMA or the beta calibration."""
        if self.grad_clip_norm is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip_norm, gradient_clip_algorithm="norm")
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            finite = self._all_finite(loss)
        else:
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            finite = not grads or self._all_finite(torch.nn.utils.get_total_norm(grads, foreach=grads[0].device.type != "cpu"))
        if not finite:
            optimizer.zero_grad(set_to_none=True)
            return False
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return True

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        lr, hr = self._memory_format(batch["lr"]), self._memory_format(batch["hr"])
        optimizers = self.optimizers()
        opt_g, opt_d = (optimizers if self.is_gan else (optimizers, None))
        # Checked before any forward pass: a NaN image would poison BatchNorm running statistics
        # even though its step is skipped.
        if not self._all_finite(lr, hr):
            self._skip_nonfinite(f"input values (images {batch.get('name', '?')})")
            self._after_batch()
            return
        edge_map = self.pixel_loss.edge_map(hr)

        self.toggle_optimizer(opt_g)
        sr = self.generator(lr)
        # D in train mode updates its BatchNorm statistics with sr: check sr first.
        if self.is_gan and not self._all_finite(sr):
            self.untoggle_optimizer(opt_g)
            self._skip_nonfinite("generator output")
            self._after_batch()
            return
        g = self.generator_losses(sr, hr, edge_map)
        self.manual_backward(g["total"])
        stepped = self._step(opt_g, g["total"])
        self.untoggle_optimizer(opt_g)
        if not stepped:
            self._skip_nonfinite("generator loss or gradient")
            self._after_batch()
            return

        d: dict[str, Tensor] = {}
        if self.is_gan:
            self.toggle_optimizer(opt_d)
            d = self.discriminator_losses(sr, hr, g["d_fake_logit_g"])
            stepped = self._step(opt_d, d["d_real"] + d["d_fake"])
            self.untoggle_optimizer(opt_d)
            if not stepped:
                self._skip_nonfinite("discriminator loss or gradient")
                self._after_batch()
                return

        self.nonfinite_in_a_row = 0
        if self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator)
        if not self.sa_calibrated:
            self._calibrate_sa(g)
        self._log_train(g, d, batch_size=hr.shape[0])
        self._after_batch()

    def _after_batch(self) -> None:
        self.batches_seen += 1
        schedulers = self.lr_schedulers()
        for sched in schedulers if isinstance(schedulers, list) else [schedulers]:
            if sched is not None:
                sched.step()
        if self.max_batches is not None and self.batches_seen >= self.max_batches:
            self.trainer.should_stop = True

    def _calibrate_sa(self, g: dict[str, Tensor]) -> None:
        """Choose β so that the SA part holds ``sa_target_share`` of the generator loss.

        With ``rest`` = all generator terms but the SA part and ``u`` = mean(W·ρ), the share
        β·u / (rest + β·u) equals s when β = s / (1 − s) · rest / u (means over the batches measured).
        """
        rest = (g["total"] - g["pixel_sa"]).detach()
        self._calib_rest += float(self.trainer.strategy.reduce(rest, reduce_op="mean"))
        self._calib_sa_unit += float(self.trainer.strategy.reduce(g["pixel_sa_unit"].detach(), reduce_op="mean"))
        self._calib_count += 1
        if self._calib_count >= self.sa_calibration_batches:
            s = self.sa_target_share
            if self._calib_sa_unit <= 0:
                raise ValueError("sa_target_share: the edge maps of the first batches are all zero; cannot calibrate beta")
            beta = s / (1.0 - s) * self._calib_rest / self._calib_sa_unit
            self.pixel_loss.set_beta(beta)
            self.sa_calibrated = True
            log.info("SA beta calibrated over %d batches: beta = %.6g (target share %.3f)", self._calib_count, beta, s)

    def _log_train(self, g: dict[str, Tensor], d: dict[str, Tensor], batch_size: int) -> None:
        scalars = {f"train/{k}": v for k, v in g.items() if k not in ("d_fake_logit_g", "pixel_sa_unit")}
        scalars.update({f"train/{k}": v for k, v in d.items()})
        scalars["train/sa_beta"] = self.pixel_loss.beta.detach()
        scalars["train/nonfinite_skipped"] = float(self.nonfinite_total)
        optimizers = self.optimizers()
        opts = optimizers if isinstance(optimizers, list) else [optimizers]
        for name, opt in zip(("lr_g", "lr_d"), opts):
            scalars[f"train/{name}"] = opt.param_groups[0]["lr"]
        self.log_dict(scalars, on_step=True, on_epoch=False, batch_size=batch_size)
        self.log("train/loss", g["total"].detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=batch_size)

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, batch: dict[str, Any], prefix: str) -> Tensor:
        lr, hr = batch["lr"], batch["hr"]
        sr = self.inference_generator()(lr)
        edge_map = self.pixel_loss.edge_map(hr)
        g = self.generator_losses(sr, hr, edge_map)
        n = hr.shape[0]
        sr_img = sr.clamp(0, 1)
        y = self.metric_y_channel and hr.shape[1] == 3
        values = {"loss": g["total"].detach().expand(n)}
        values.update({k: g[k].detach().expand(n) for k in ("pixel", "pixel_sa", "perceptual", "adversarial") if k in g})
        values["psnr"] = metrics.psnr(sr_img, hr, crop_border=self.scale, y_channel=y)
        values["ssim"] = metrics.ssim(sr_img, hr, crop_border=self.scale, y_channel=y)
        # Per-image sums and counts, all-reduced once per epoch: exact means under DDP, where
        # processes may hold different numbers of images (the datamodules never pad with repeats).
        means = self.eval_metrics[prefix]
        for name, value in values.items():
            if name not in means:
                means[name] = metrics.PerImageMean().to(self.device)
            means[name].update(value)
            self.log(
                f"{prefix}/{name}",
                means[name],
                on_epoch=True,
                batch_size=n,
                metric_attribute=f"eval_metrics.{prefix}.{name}",
                prog_bar=prefix == "val" and name in ("loss", "psnr"),
            )
        return sr_img

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "test")

    def predict_step(self, batch: dict[str, Any] | Tensor, batch_idx: int) -> Tensor:
        lr = batch["lr"] if isinstance(batch, dict) else batch
        return self.inference_generator()(lr).clamp(0, 1)

    # ------------------------------------------------------------------ optimisers and state
    def configure_optimizers(self) -> Any:
        opt_g = self.optimizer_g(self.generator.parameters())
        check_optimizer_lr(opt_g, "model.optimizer_g")
        optimizers = [opt_g]
        if self.is_gan:
            optimizers.append(self.optimizer_d(self.discriminator.parameters()))
            check_optimizer_lr(optimizers[-1], "model.optimizer_d")
        # Lightning never steps schedulers in manual optimisation: _after_batch steps them once per batch.
        schedulers = [MultiStepLR(opt, milestones=self.lr_milestones, gamma=self.lr_gamma) for opt in optimizers]
        return optimizers, schedulers

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["salightning"] = {
            "batches_seen": self.batches_seen,
            "nonfinite_total": self.nonfinite_total,
            "sa_calibrated": self.sa_calibrated,
            "calibration": (self._calib_rest, self._calib_sa_unit, self._calib_count),
            "rng_states": _rng_states(),
        }
        # So that `--ckpt_path` also continues the same W&B run (see SALightningCLI.before_fit).
        for logger in self.trainer.loggers:
            if type(logger).__name__ == "WandbLogger" and logger.version is not None:
                checkpoint["salightning"]["wandb_run_id"] = str(logger.version)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("salightning")
        if state is None:
            return
        self.batches_seen = int(state["batches_seen"])
        self.nonfinite_total = int(state["nonfinite_total"])
        self.sa_calibrated = bool(state["sa_calibrated"])
        self._calib_rest, self._calib_sa_unit, self._calib_count = state["calibration"]
        # Applied when training starts, so loading a checkpoint for inference leaves the RNGs alone.
        self._rng_states_to_restore = state.get("rng_states")

    def on_fit_start(self) -> None:
        # after the checkpoint is restored and before the first DataLoader iterator draws a seed
        if getattr(self, "_rng_states_to_restore", None) is not None:
            _set_rng_states(self._rng_states_to_restore)
            self._rng_states_to_restore = None

    def on_train_start(self) -> None:
        if self.max_batches is not None and self.batches_seen >= self.max_batches:
            log.warning("max_batches=%d already reached (batch %d): nothing to train", self.max_batches, self.batches_seen)
            self.trainer.should_stop = True
