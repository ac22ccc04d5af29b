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
  the generator loss is :class:`~salightning.training.GeneratorObjective` (eq. 16/18/20/22).

Counting: ``trainer.global_step`` counts *optimizer steps* (2 per GAN batch, 1 per stage-1
batch). This module keeps its own batch counter, ``batches_seen``, saved in checkpoints; LR
milestones, ``max_batches`` and the SA-beta2 balance are counted in batches.

The pieces with state of their own (:class:`NonFiniteGuard`, :class:`SABalance`) are saved in
checkpoints under ``checkpoint["salightning"]``, beside ``generator_config``; the global RNG
states and the W&B run id are saved by callbacks (:mod:`salightning.callbacks`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.cli import OptimizerCallable
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.optim import Adam, Optimizer
from torch.optim.lr_scheduler import MultiStepLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import salightning
from salightning.checks import check_at_least, check_optimizer_factory, check_fraction, check_optimizer_lr, check_positive
from salightning.losses import AdversarialLoss, SAPixelLoss
from salightning.checkpoints import CHECKSUM_KEY, load_pretrained, tensor_digest
from salightning.models import constructor_config, generator_spec
from salightning.training.balance import BetaMode, SABalance
from salightning.training.evaluation import EvaluationMeans, naming_images
from salightning.training.guard import NonFiniteGuard
from salightning.training.objective import GeneratorObjective, discriminator_input

__all__ = ["SRGANModule"]

log = logging.getLogger(__name__)

#: Constructor arguments that are networks or factories: never pickled into the hyper-parameters.
_NETWORK_ARGS = ["generator", "discriminator", "pixel_loss", "adversarial_loss", "perceptual_loss", "optimizer_g", "optimizer_d"]
#: Submodules that moved into the objective: old checkpoints' state-dict keys are renamed on load.
_OBJECTIVE_PARTS = ("pixel_loss.", "adversarial_loss.", "perceptual_loss.")



def resolve_package_path(path: str, option: str) -> Path:
    """``package:assets/x.pth`` names a file shipped inside salightning (so configs work from
    any folder); any other value is an ordinary path. Raises FileNotFoundError naming ``option``."""
    p = Path(salightning.__file__).parent / path[len("package:") :] if path.startswith("package:") else Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{option}: file {str(p)!r} does not exist")
    return p


def default_adam(params: Iterable) -> Optimizer:
    """ESRGAN's stage-2 recipe (BasicSR): Adam, lr 1e-4, betas (0.9, 0.99)."""
    return Adam(params, lr=1e-4, betas=(0.9, 0.99))


def _check_arguments(args: dict[str, Any]) -> None:
    """Refuse SRGANModule arguments that would fail later, naming the option and the value."""
    check_fraction(args["lr_gamma"], "model.lr_gamma")
    if args["grad_clip_norm"] is not None:
        check_positive(args["grad_clip_norm"], "model.grad_clip_norm")
    for name in ("sa_calibration_batches", "sa_hold_batches", "max_batches"):
        if args[name] is not None:
            check_at_least(args[name], f"model.{name}", 1)
    for name in ("optimizer_g", "optimizer_d"):
        check_optimizer_factory(args[name], f"model.{name}")
    milestones = args["lr_milestones"]
    if milestones is not None and list(milestones) != sorted(milestones):
        raise ValueError(f"lr_milestones must be increasing, got {milestones!r}")
    if args["ema_decay"] is not None and not 0.0 < args["ema_decay"] < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1), got {args['ema_decay']!r}")


class SRGANModule(pl.LightningModule):
    """Two-stage GAN super-resolution with a spatially adaptive pixel loss.

    Args:
        generator: maps ``lr`` to ``sr`` (B, C, H, W); see :func:`~salightning.models.generator_spec`.
        pixel_loss: the (SA) pixel loss, eq. 8/9 (plain, ``beta2=0``) or eq. 12/13 (SA).
        discriminator: maps (B, C, H, W) to logits (B, 1). ``None`` selects stage 1.
        adversarial_loss: GAN loss (vanilla eq. 14, relativistic, hinge, LS); stage 2 only.
        adversarial_weight: alpha of eq. 16/18 (ESRGAN 0.005) or alpha1 of eq. 20/22 (0.001).
        perceptual_loss: eq. 15 (or the poster's SA perceptual loss); ``None`` for none.
        perceptual_weight: 1 in eq. 16/18, alpha2 = 0.998 in eq. 20/22.
        tv_weight: weight of the total-variation regulariser (SRGAN); 0 disables it.
        optimizer_g, optimizer_d: optimizer factories (``None``: Adam, lr 1e-4, betas 0.9/0.99).
        lr_milestones: batches at which both learning rates are multiplied by ``lr_gamma``
            (the paper: 50k, 100k, 200k, 300k); ``lr_gamma``: the factor (the paper: 0.5).
        ema_decay: decay of a generator-only exponential moving average (ESRGAN: 0.999); when
            set, the EMA generator is used for validation, test, predict and export.
        sa_target_share, sa_beta_mode, sa_calibration_batches, sa_hold_batches: how beta2 is
            chosen (:class:`~salightning.training.SABalance`): "fixed" (the paper's), "calibrate"
            or "hold" the SA part at ``sa_target_share`` (e.g. 0.15) of the generator loss.
            Default mode: "calibrate" when ``sa_target_share`` is set, else "fixed".
        pretrained_generator: checkpoint to initialise the generator from; ``package:...``
            names a file shipped inside salightning (``package:assets/quickstart_psnr_x4.pth``).
        grad_clip_norm: clip each network's gradient norm to this value.
        max_nonfinite_in_a_row: non-finite losses skip their batch; this many in a row stop the run.
        max_batches: stop after this many training batches (``max_steps`` counts optimizer steps).
        metric_y_channel: validation PSNR/SSIM on the BT.601 Y channel (as papers do), not RGB.
        channels_last: keep networks and image batches in channels-last memory format.
        compile_generator: compile the generator in place with ``torch.compile``.
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
        sa_beta_mode: BetaMode | None = None,
        sa_calibration_batches: int = 50,
        sa_hold_batches: int = 100,
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
        _check_arguments(locals())
        mode = sa_beta_mode or ("fixed" if sa_target_share is None else "calibrate")
        self.sa_balance = SABalance(mode, sa_target_share, sa_calibration_batches, sa_hold_batches)
        if mode != "fixed" and (pixel_loss is None or pixel_loss.edge_extractor is None):
            raise ValueError(f"sa_target_share (sa_beta_mode {mode!r}) needs a pixel_loss with an edge_extractor (the SA part to balance)")
        self.nonfinite_guard = NonFiniteGuard(max_nonfinite_in_a_row)
        self.spec = generator_spec(generator)

        self.generator = generator
        self.discriminator = discriminator
        self.objective = GeneratorObjective(pixel_loss, adversarial_loss, adversarial_weight, perceptual_loss, perceptual_weight, tv_weight)
        self.optimizer_g = optimizer_g or default_adam
        self.optimizer_d = optimizer_d or default_adam
        self.lr_milestones = list(lr_milestones or [])
        self.lr_gamma = lr_gamma
        self.grad_clip_norm = grad_clip_norm
        self.max_batches = max_batches
        self.metric_y_channel = metric_y_channel
        self.channels_last = channels_last
        self.compile_generator = compile_generator
        if pretrained_generator is not None:
            load_pretrained(self.generator, resolve_package_path(pretrained_generator, "pretrained_generator"))
        self.generator_ema: AveragedModel | None = None
        if ema_decay is not None:
            self.generator_ema = AveragedModel(self.generator, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
            self.generator_ema.requires_grad_(False)
        self.batches_seen = 0  # saved by on_save_checkpoint: Lightning counts optimizer steps
        # Validation / test means (torchmetrics states: not saved in checkpoints).
        self.eval_metrics = nn.ModuleDict({stage: EvaluationMeans(self.scale, metric_y_channel) for stage in ("val", "test")})
        # Plain values only; the networks are in the state dict and the generator's config in
        # checkpoint["generator_config"] (on_save_checkpoint), however the module was built.
        self.save_hyperparameters(ignore=_NETWORK_ARGS)

    @property
    def pixel_loss(self) -> SAPixelLoss:
        """The (SA) pixel loss of the objective."""
        return self.objective.pixel_loss

    @property
    def is_gan(self) -> bool:
        """True in stage 2 (a discriminator is being trained)."""
        return self.discriminator is not None

    @property
    def scale(self) -> int:
        """The generator's SR factor (used for the metrics' border crop)."""
        return self.spec.scale

    def inference_generator(self) -> nn.Module:
        """The generator used outside training: the EMA one when EMA is on."""
        return self.generator_ema.module if self.generator_ema is not None else self.generator

    def forward(self, lr: Tensor) -> Tensor:
        """Super-resolve ``lr`` ((B, C, h, w) or (B, T, C, H, W)) with the inference generator."""
        return self.inference_generator()(lr)

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        if self.compile_generator and stage == "fit":
            self.generator.compile()

    def _memory_format(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def discriminator_losses(self, sr: Tensor, hr: Tensor, fake_logits_g: Tensor) -> dict[str, Tensor]:
        """D step, backpropagating its real and fake terms separately (BasicSR's fix for DDP with
        BatchNorm discriminators). ``fake_logits_g`` are D's logits on ``sr`` from the G step
        (same D parameters), reused as the detached fake side of the real term."""
        real_logits = self.discriminator(discriminator_input(self.discriminator, hr))
        loss_real = self.objective.adversarial_loss.discriminator_real_loss(real_logits, fake_logits_g)
        self.manual_backward(loss_real)
        fake_logits = self.discriminator(discriminator_input(self.discriminator, sr.detach()))
        loss_fake = self.objective.adversarial_loss.discriminator_fake_loss(fake_logits, real_logits.detach())
        self.manual_backward(loss_fake)
        return {"d_real": loss_real.detach(), "d_fake": loss_fake.detach(), "d_real_logit": real_logits.detach().mean(),
                "d_fake_logit": fake_logits.detach().mean()}

    def _finite(self, *tensors: Tensor) -> bool:
        return self.nonfinite_guard.all_finite(self.trainer.strategy, *tensors)

    def _step(self, optimizer: Any, loss: Tensor) -> bool:
        """Clip and step; False (no step, gradients dropped) when the step would be non-finite.

        A finite loss can give non-finite gradients (overflow in backward), and one Adam step
        with them makes every weight NaN: the gradient norm is checked (one fused norm, one host
        sync). Under fp16 AMP the GradScaler skips such steps itself; there the loss is checked,
        so NaN losses are still counted and never reach the EMA or the beta2 balance."""
        if self.grad_clip_norm is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip_norm, gradient_clip_algorithm="norm")
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            finite = self._finite(loss)
        else:
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            finite = not grads or self._finite(torch.nn.utils.get_total_norm(grads, foreach=grads[0].device.type != "cpu"))
        if finite:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return finite

    def _skip(self, what: str) -> None:
        self.nonfinite_guard.skipped(what, self.batches_seen)
        self._after_batch()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        lr, hr = self._memory_format(batch["lr"]), self._memory_format(batch["hr"])
        opt_g, opt_d = self.optimizers() if self.is_gan else (self.optimizers(), None)
        # Checked before any forward pass: a NaN image would poison BatchNorm running statistics
        # even though its step is skipped.
        if not self._finite(lr, hr):
            return self._skip(f"input values (images {batch.get('name', '?')})")
        edge_map = self.pixel_loss.edge_map(hr)
        self.toggle_optimizer(opt_g)
        sr = self.generator(lr)
        # D in train mode updates its BatchNorm statistics with sr: check sr first.
        if self.is_gan and not self._finite(sr):
            self.untoggle_optimizer(opt_g)
            return self._skip("generator output")
        total, g = self.objective(sr, hr, edge_map, self.discriminator)
        self.manual_backward(total)
        stepped = self._step(opt_g, total)
        self.untoggle_optimizer(opt_g)
        if not stepped:
            return self._skip("generator loss or gradient")
        d: dict[str, Tensor] = {}
        if self.is_gan:
            self.toggle_optimizer(opt_d)
            d = self.discriminator_losses(sr, hr, g["d_fake_logit_g"])
            stepped = self._step(opt_d, d["d_real"] + d["d_fake"])
            self.untoggle_optimizer(opt_d)
            if not stepped:
                return self._skip("discriminator loss or gradient")
        self.nonfinite_guard.passed()
        if self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator)
        if self.sa_balance.active:
            self._balance_sa(total.detach() - g["pixel_sa"], g["pixel_sa_unit"])
        self._log_train(total, g, d, batch_size=hr.shape[0])
        self._after_batch()

    def _after_batch(self) -> None:
        self.batches_seen += 1
        schedulers = self.lr_schedulers()
        for sched in schedulers if isinstance(schedulers, list) else [schedulers]:
            sched.step()
        if self.max_batches is not None and self.batches_seen >= self.max_batches:
            self.trainer.should_stop = True

    def _balance_sa(self, rest: Tensor, sa_unit: Tensor) -> None:
        # One all-reduce for both values: every rank chooses the same beta2.
        rest_mean, unit_mean = self.trainer.strategy.reduce(torch.stack([rest, sa_unit]).float(), reduce_op="mean").tolist()
        update = self.sa_balance.update(rest_mean, unit_mean)
        if update is not None:
            self.pixel_loss.set_beta2(update[0])
            if update[1] is not None and self.trainer.is_global_zero:
                print(update[1], file=sys.stderr, flush=True)

    def _log_train(self, total: Tensor, g: dict[str, Tensor], d: dict[str, Tensor], batch_size: int) -> None:
        scalars = {f"train/{k}": v.detach() for k, v in g.items() if k not in ("d_fake_logit_g", "pixel_sa_unit")}
        scalars.update({f"train/{k}": v for k, v in d.items()})
        scalars["train/sa_beta"] = self.pixel_loss.beta2.detach()
        scalars["train/nonfinite_skipped"] = float(self.nonfinite_guard.total)
        optimizers = self.optimizers()
        for name, opt in zip(("lr_g", "lr_d"), optimizers if isinstance(optimizers, list) else [optimizers]):
            scalars[f"train/{name}"] = opt.param_groups[0]["lr"]
        self.log_dict(scalars, on_step=True, on_epoch=False, batch_size=batch_size)
        self.log("train/loss", total.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=batch_size)

    def _evaluate(self, batch: dict[str, Any], prefix: str) -> Tensor:
        lr, hr = batch["lr"], batch["hr"]
        sr = self.inference_generator()(lr).clamp(0, 1)
        with naming_images(batch.get("name"), {"val": "validation"}.get(prefix, prefix)):
            total, g = self.objective(sr, hr, self.pixel_loss.edge_map(hr), self.discriminator)
        losses = {"loss": total, **{k: g[k] for k in ("pixel", "pixel_sa", "perceptual", "adversarial") if k in g}}
        self.eval_metrics[prefix].update(sr, hr, losses)
        return sr

    def _log_evaluation(self, prefix: str) -> dict[str, Tensor]:
        metrics = self.eval_metrics[prefix].compute()  # synchronised by torchmetrics
        for name, value in metrics.items():
            self.log(f"{prefix}/{name}", value.float(), prog_bar=prefix == "val" and name in ("loss", "psnr"))
        self.eval_metrics[prefix].reset()
        return metrics

    def on_validation_epoch_end(self) -> None:
        metrics = self._log_evaluation("val")
        if self.trainer.state.fn == "fit":  # before ModelCheckpoint sees the loss: a diverged run gives no "best"
            self.nonfinite_guard.validated(metrics.get("loss"), self.batches_seen)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "test")

    def predict_step(self, batch: dict[str, Any] | Tensor, batch_idx: int) -> Tensor:
        return self.inference_generator()(batch["lr"] if isinstance(batch, dict) else batch).clamp(0, 1)

    def configure_optimizers(self) -> Any:
        opt_g = self.optimizer_g(self.generator.parameters())
        check_optimizer_lr(opt_g, "model.optimizer_g")
        optimizers = [opt_g]
        if self.is_gan:
            optimizers.append(self.optimizer_d(self.discriminator.parameters()))
            check_optimizer_lr(optimizers[-1], "model.optimizer_d")
        # Lightning never steps schedulers in manual optimisation: _after_batch steps them once per batch.
        return optimizers, [MultiStepLR(opt, milestones=self.lr_milestones, gamma=self.lr_gamma) for opt in optimizers]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        try:
            config = constructor_config(self.generator)
        except TypeError as err:
            raise TypeError(f"cannot save a checkpoint that predict / evaluate / export can rebuild: {err}") from None
        checkpoint["generator_config"] = config
        checkpoint.setdefault("hyper_parameters", {})["generator"] = config
        checkpoint.setdefault("salightning", {}).update(
            batches_seen=self.batches_seen, nonfinite_guard=self.nonfinite_guard.state_dict(), sa_balance=self.sa_balance.state_dict()
        )
        # The last hook before the file is written: trainer.save_checkpoint from Python carries the checksum too.
        checkpoint[CHECKSUM_KEY] = tensor_digest(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state_dict = checkpoint.get("state_dict", {})
        for key in [k for k in state_dict if k.startswith(_OBJECTIVE_PARTS)]:
            state_dict["objective." + key] = state_dict.pop(key)
        state = checkpoint.get("salightning")
        if state is None:
            return
        self.batches_seen = int(state["batches_seen"])
        self.nonfinite_guard.load_state_dict(state.get("nonfinite_guard", {"total": state.get("nonfinite_total", 0)}))
        self.sa_balance.load_state_dict(state.get("sa_balance", state))

    def on_fit_start(self) -> None:
        message = self.objective.balance_warning(self.is_gan)
        if message is not None:
            rank_zero_warn(message)

    def on_train_end(self) -> None:
        self.nonfinite_guard.training_ended(self.batches_seen, self.trainer.num_training_batches)

    def on_train_start(self) -> None:
        if self.max_batches is not None and self.batches_seen >= self.max_batches:
            log.warning("max_batches=%d already reached (batch %d): nothing to train", self.max_batches, self.batches_seen)
            self.trainer.should_stop = True
