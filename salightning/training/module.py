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

import contextlib
import logging
import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
from pytorch_lightning.cli import OptimizerCallable
import torch
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Adam, Optimizer
from torch.optim.lr_scheduler import MultiStepLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import salightning
from salightning.checks import check_at_least, check_optimizer_factory, check_fraction, check_optimizer_lr, check_positive
from salightning.losses import AdversarialLoss, SAPixelLoss
from salightning.checkpoints import load_pretrained_generator
from salightning.degradations import RealESRGANDegradation
from salightning.metrics import LPIPS_BACKBONES, lpips_metric
from salightning.tiling import check_tiling, tiled_forward
from salightning.checkpoints import CHECKSUM_KEY, tensor_digest
from salightning.models import constructor_config, generator_spec
from salightning.training.balance import BetaMode, SABalance
from salightning.training.evaluation import EvaluationMeans, naming_images
from salightning.training.guard import NonFiniteGuard
from salightning.training.objective import GeneratorObjective, discriminator_input
from salightning.weights import TORCHVISION_FILES, torchvision_cache_dir

__all__ = ["SRGANModule"]

log = logging.getLogger(__name__)

#: Constructor arguments that are networks or factories: never pickled into the hyper-parameters.
_NETWORK_ARGS = ["generator", "discriminator", "pixel_loss", "adversarial_loss", "perceptual_loss", "optimizer_g", "optimizer_d", "degradation"]
#: Submodules that moved into the objective: old checkpoints' state-dict keys are renamed on load.
_OBJECTIVE_PARTS = ("pixel_loss.", "adversarial_loss.", "perceptual_loss.")



def resolve_package_path(path: str, option: str) -> Path:
    """``package:assets/x.pth`` names a file shipped inside salightning (so configs work from
    any folder); any other value is an ordinary path. Raises FileNotFoundError naming ``option``."""
    p = Path(salightning.__file__).parent / path[len("package:") :] if path.startswith("package:") else Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{option}: file {str(p)!r} does not exist")
    return p


@rank_zero_only
def rank_zero_info_line(line: str) -> None:
    """Print ``line`` to stderr once per run (global rank 0)."""
    print(line, file=sys.stderr, flush=True)


def default_adam(params: Iterable) -> Optimizer:
    """ESRGAN's stage-2 recipe (BasicSR): Adam, lr 1e-4, betas (0.9, 0.99); fused (one kernel for
    all parameters: a quarter of the for-loop's time on a CPU, measured in bench/)."""
    return Adam(params, lr=1e-4, betas=(0.9, 0.99), fused=True)


def _check_arguments(args: dict[str, Any]) -> None:
    """Refuse SRGANModule arguments that would fail later, naming the option and the value."""
    check_fraction(args["lr_gamma"], "model.lr_gamma")
    if args["grad_clip_norm"] is not None:
        check_positive(args["grad_clip_norm"], "model.grad_clip_norm")
    check_at_least(args["accumulate"], "model.accumulate", 1)
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
    try:
        check_tiling(args["eval_tile"], args["eval_tile_overlap"])
    except ValueError as err:
        raise ValueError(f"model.eval_tile / model.eval_tile_overlap: {err}") from None
    if args["eval_lpips"] not in ("alex", "vgg", None):
        raise ValueError(f"model.eval_lpips must be 'alex', 'vgg' or null, got {args['eval_lpips']!r}")


def trainable(network: nn.Module) -> list[Tensor]:
    """The parameters of ``network`` that require gradients."""
    return [p for p in network.parameters() if p.requires_grad]


class SRGANModule(pl.LightningModule):
    """Two-stage GAN super-resolution with a spatially adaptive pixel loss.

    Args:
        generator: maps ``lr`` to ``sr`` (B, C, H, W); see :func:`~salightning.models.generator_spec`.
            None: the generator recorded in ``pretrained_generator`` (a checkpoint of stage 1), its
            class and arguments included (classes of salightning only).
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
            A line says what was loaded (tensors, EMA or not, the generator and its arguments).
        grad_clip_norm: clip each network's gradient norm to this value.
        max_nonfinite_in_a_row: non-finite losses skip their batch; this many in a row stop the run.
        max_batches: stop after this many training batches (``max_steps`` counts optimizer steps).
        metric_y_channel: validation PSNR/SSIM on the BT.601 Y channel (as papers do), not RGB.
        eval_tile, eval_tile_overlap: validation / test images run through the generator in
            tiles of at most ``eval_tile`` squared LR pixels (the seam rule of ``salightning
            predict``; 0: always whole); images up to that size are exact, so ``val/psnr``
            equals ``salightning evaluate``'s PSNR on the same images.
        eval_lpips: LPIPS trunk ("alex", "vgg") of the validation / test metric ``lpips``,
            computed when its ImageNet weights are found (torchvision's cache or
            ``eval_lpips_weights``; a one-line note says when not); None: not computed.
        channels_last: keep networks and image batches in channels-last memory format.
        compile: compile the generator and the perceptual network in place with ``torch.compile``
            (before DDP wraps them; checkpoints keep the plain parameter names). The discriminator
            stays eager: its graph serves both backward passes of the step.
        accumulate: gradient accumulation: the networks step once every ``accumulate`` batches,
            with the mean of their gradients, as one batch ``accumulate`` times larger would give
            for the pixel, perceptual and per-sample GAN terms (the relativistic GAN's batch means
            and D's BatchNorm statistics are taken per batch). ``lr_milestones``, ``max_batches``
            and the beta2 balance still count batches.
        degradation: synthesises the LR of training batches that hold only ``hr`` (e.g.
            :class:`~salightning.degradations.RealESRGANDegradation` with
            :class:`~salightning.data.GTImageSRDataModule`), on the training device in
            ``on_train_batch_start``; it also puts its sharpened HR in ``batch["hr_usm"]``.
            Its random state is in the state dict (bit-identical resume). Validation and test
            batches are never degraded.
    """

    def __init__(
        self,
        generator: nn.Module | None = None,
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
        eval_tile: int = 512,
        eval_tile_overlap: int = 32,
        eval_lpips: Literal["alex", "vgg"] | None = "alex",
        eval_lpips_weights: str | None = None,
        channels_last: bool = False,
        compile: bool = False,
        accumulate: int = 1,
        degradation: RealESRGANDegradation | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        _check_arguments(locals())
        mode = sa_beta_mode or ("fixed" if sa_target_share is None else "calibrate")
        self.sa_balance = SABalance(mode, sa_target_share, sa_calibration_batches, sa_hold_batches)
        if mode != "fixed" and (pixel_loss is None or pixel_loss.edge_extractor is None):
            raise ValueError(f"sa_target_share (sa_beta_mode {mode!r}) needs a pixel_loss with an edge_extractor (the SA part to balance)")
        self.nonfinite_guard = NonFiniteGuard(max_nonfinite_in_a_row)
        if pretrained_generator is not None:
            path = resolve_package_path(pretrained_generator, "pretrained_generator")
            generator, note = load_pretrained_generator(path, generator, option="model.pretrained_generator")
            rank_zero_info_line(note)
        elif generator is None:
            raise ValueError("model.generator is required (or model.pretrained_generator naming a checkpoint of `salightning fit`, whose generator is rebuilt)")
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
        self.eval_tile, self.eval_tile_overlap = eval_tile, eval_tile_overlap
        self.eval_lpips, self.eval_lpips_weights = eval_lpips, eval_lpips_weights
        self.channels_last = channels_last
        self.compile_networks = compile
        self.accumulate = accumulate
        self.degradation = degradation
        self.generator_ema: AveragedModel | None = None
        if ema_decay is not None:
            self.generator_ema = AveragedModel(self.generator, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
            self.generator_ema.requires_grad_(False)
        self.batches_seen = 0  # saved by on_save_checkpoint: Lightning counts optimizer steps
        self.pending_gradients: dict[str, Tensor] = {}  # a mid-accumulation checkpoint's, set at train start
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
        if stage in ("fit", "validate", "test"):
            self._set_up_lpips(stage)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        if self.compile_networks and stage == "fit":
            # Not D: its graph serves both backward passes, and a compiled backward runs only once.
            for network in (self.generator, self.objective.perceptual_loss):
                if network is not None:
                    network.compile()

    def _memory_format(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def _all_finite(self, checks: dict[str, Tensor]) -> str | None:
        """The name of the first check that is not all-finite on some rank, or None: every check
        in one fused reduction and one host sync (every rank takes the same decision, or DDP's
        collectives hang)."""
        flags = torch.stack([torch.isfinite(t).all() for t in checks.values()]).float()
        flags = self.trainer.strategy.reduce(flags, reduce_op="min") if self.trainer.world_size > 1 else flags
        failed = [name for name, ok in zip(checks, flags.tolist()) if not ok]
        return failed[0] if failed else None

    def _gradients(self, network: nn.Module) -> list[Tensor]:
        return [p.grad for p in network.parameters() if p.grad is not None]

    def _synchronise_gradients(self, network: nn.Module) -> None:
        """All-reduce ``network``'s gradients (mean over ranks) in one flat collective: the GAN step
        backpropagates twice through one graph, which DDP's reducer cannot follow (see training_step)."""
        grads = self._gradients(network)
        if not grads:
            return
        flat = self.trainer.strategy.reduce(torch.cat([g.reshape(-1) for g in grads]), reduce_op="mean")
        for g, chunk in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(chunk.view_as(g))

    def _clip(self, network: nn.Module) -> Tensor:
        """The gradient norm of ``network`` (0 without gradients), clipped to ``grad_clip_norm`` on the
        device (no host sync); fp16 loss scaling is refused at fit start, so these are true gradients."""
        grads = self._gradients(network)
        if not grads:
            return torch.zeros((), device=self.device)
        foreach = grads[0].device.type != "cpu"
        norm = torch.nn.utils.get_total_norm(grads, foreach=foreach)
        if self.grad_clip_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(network.parameters(), self.grad_clip_norm, norm, foreach=foreach)
        return norm

    def _network_buffers(self) -> list[Tensor]:
        networks = [self.generator] + ([self.discriminator] if self.is_gan else [])
        return [b for net in networks for b in net.buffers()]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """One batch: G and D losses from one generator forward and two discriminator forwards
        (on HR and on SR), both networks' gradients from that one graph, then one finiteness
        decision and both optimizer steps (every ``accumulate`` batches).

        The mathematics are ESRGAN's (BasicSR's ``optimize_parameters``): G's gradient is taken with
        D's weights of this batch and D's gradient on the SR computed before G's update. BasicSR
        runs D five times per batch (twice for G, three times for D); the logits are the same, so
        here D runs twice and each backward accumulates into its own network only (``inputs=``).
        What differs: D's BatchNorm running statistics are updated twice per batch, not five times
        (they are used only in eval mode, i.e. for the validation loss's GAN term).
        """
        lr, hr = self._memory_format(batch["lr"]), self._memory_format(batch["hr"])
        # Real-ESRGAN's targets: the pixel and perceptual terms (and W) see the sharpened HR, the GAN term the plain one
        target = self._memory_format(batch["hr_usm"]) if "hr_usm" in batch else hr
        opt_g, opt_d = self.optimizers() if self.is_gan else (self.optimizers(), None)
        steps = (self.batches_seen + 1) % self.accumulate == 0
        # A non-finite batch is skipped after the fact (one host sync): restore what its forward
        # passes changed in place, the BatchNorm running statistics.
        buffers = self._network_buffers()
        saved = [b.clone() for b in buffers]
        edge_map = self.pixel_loss.edge_map(target)
        sr = self.generator(lr)
        checks = {f"input values (images {batch.get('name', '?')})": torch.stack([lr.sum(), hr.sum()]), "generator output": sr.sum()}
        d: dict[str, Tensor] = {}
        scale = 1.0 / self.accumulate
        if self.is_gan:
            real_logits = self.discriminator(discriminator_input(self.discriminator, hr))
            fake_logits = self.discriminator(discriminator_input(self.discriminator, sr))
            total, g = self.objective(sr, target, edge_map, logits=(fake_logits, real_logits))
            adversarial = self.objective.adversarial_loss
            d_real = adversarial.discriminator_real_loss(real_logits, fake_logits.detach())
            d_fake = adversarial.discriminator_fake_loss(fake_logits, real_logits.detach())
            d = {"d_real": d_real.detach(), "d_fake": d_fake.detach(), "d_real_logit": real_logits.detach().mean(),
                 "d_fake_logit": fake_logits.detach().mean()}
            # DDP's reducer expects one backward per forward: the two backward passes of this graph
            # run outside it, and the gradients are all-reduced here, once per optimizer step.
            distributed = isinstance(self.trainer.model, DistributedDataParallel)
            with self.trainer.model.no_sync() if distributed else contextlib.nullcontext():
                # D's backward first: only D's graph is walked twice, so G's (compiled) backward runs once
                self.manual_backward((d_real + d_fake) * scale, inputs=trainable(self.discriminator), retain_graph=True)
                self.manual_backward(total * scale, inputs=trainable(self.generator))
            if distributed:
                self.trainer.model.require_forward_param_sync = True  # no_sync cleared it: DDP broadcasts buffers again
            checks["discriminator loss"] = torch.stack([d_real.detach(), d_fake.detach()])
        else:
            total, g = self.objective(sr, target, edge_map)
            self.manual_backward(total * scale)
        checks["generator loss"] = total.detach()
        networks = (self.generator, self.discriminator) if self.is_gan else (self.generator,)
        if steps:
            if self.is_gan and distributed:
                for network in networks:
                    self._synchronise_gradients(network)
            for network in networks:
                checks[f"{'discriminator' if network is self.discriminator else 'generator'} gradient"] = self._clip(network)
        failed = self._all_finite(checks)
        if failed is not None:
            # the accumulated gradients hold this batch's too: the whole group is dropped
            for opt in (opt_g, opt_d) if self.is_gan else (opt_g,):
                opt.zero_grad(set_to_none=True)
            for buffer, value in zip(buffers, saved):
                buffer.copy_(value)
            return self._skip(failed)
        if steps:
            for opt in (opt_g, opt_d) if self.is_gan else (opt_g,):
                opt.step()
                opt.zero_grad(set_to_none=True)
            if self.generator_ema is not None:
                self.generator_ema.update_parameters(self.generator)
        self.nonfinite_guard.passed()
        if self.sa_balance.active:
            self._balance_sa(total.detach() - g["pixel_sa"], g["pixel_sa_unit"])
        self._log_train(total, g, d, batch_size=hr.shape[0])
        self._after_batch()

    def _skip(self, what: str) -> None:
        self.nonfinite_guard.skipped(what, self.batches_seen)
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

    def _set_up_lpips(self, stage: str) -> None:
        """Give the evaluation means the LPIPS metric once (it is kept out of checkpoints), or say why not."""
        means = list(self.eval_metrics.values())
        if self.eval_lpips is None or any(m.lpips is not None for m in means):
            return
        if self.eval_lpips_weights is not None:
            resolve_package_path(self.eval_lpips_weights, "model.eval_lpips_weights")  # a named file must exist
        with torch.random.fork_rng(devices=[]):  # lpips initialises random layers first: training must not depend on it
            metric, _ = lpips_metric(self.eval_lpips, self.eval_lpips_weights)
        for m in means:
            m.lpips = metric
        if metric is None:
            arch = LPIPS_BACKBONES[self.eval_lpips]
            note = f"validation LPIPS not computed: no {arch} ImageNet weights at {torchvision_cache_dir() / TORCHVISION_FILES[arch]}"
            # Refused now rather than at the first validation's end, where ModelCheckpoint would stop.
            if stage == "fit" and any(getattr(cb, "monitor", None) == "val/lpips" for cb in self.trainer.callbacks):
                raise ValueError(f"a callback monitors val/lpips but {note}; put the file there, give model.eval_lpips_weights, or monitor val/psnr")
            rank_zero_info_line(f"salightning: {note}; put the file there, give model.eval_lpips_weights, or set model.eval_lpips: null")

    def _evaluate(self, batch: dict[str, Any], prefix: str) -> Tensor:
        lr, hr = batch["lr"], batch["hr"]
        # Whole images, tile by tile when large: the path of `salightning evaluate` and predict.
        sr = tiled_forward(self.inference_generator(), lr, self.eval_tile, self.eval_tile_overlap).clamp(0, 1)
        with naming_images(batch.get("name"), {"val": "validation"}.get(prefix, prefix)):
            total, g = self.objective(sr, hr, self.pixel_loss.edge_map(hr), self.discriminator)
        losses = {"loss": total, **{k: g[k] for k in ("pixel", "pixel_sa", "perceptual", "adversarial") if k in g}}
        self.eval_metrics[prefix].update(sr, hr, losses)
        return sr

    def _log_evaluation(self, prefix: str) -> dict[str, Tensor]:
        # compute() is synchronised by torchmetrics, so every rank holds the same values; sync_dist
        # averages these equal values (a no-op) and tells Lightning they are global.
        metrics = self.eval_metrics[prefix].compute()
        for name, value in metrics.items():
            self.log(f"{prefix}/{name}", value.float(), prog_bar=prefix == "val" and name in ("loss", "psnr"), sync_dist=True)
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
        if self.batches_seen % self.accumulate:
            # saved mid-accumulation: the partial gradient sum is part of the training state
            checkpoint["salightning"]["accumulated_gradients"] = {
                name: p.grad.detach().clone() for name, p in self.named_parameters() if p.grad is not None
            }
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
        self.pending_gradients = state.get("accumulated_gradients", {})
        self.nonfinite_guard.load_state_dict(state.get("nonfinite_guard", {"total": state.get("nonfinite_total", 0)}))
        self.sa_balance.load_state_dict(state.get("sa_balance", state))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Synthesise the LR of HR-only training batches with ``degradation``, on their device
        (the batch dict is completed in place: this hook runs after the transfer, and
        ``training_step`` receives the same dict; ``on_after_batch_transfer`` would make
        Lightning warn on every fit with a datamodule)."""
        if self.degradation is not None and isinstance(batch, dict) and "lr" not in batch:
            batch["lr"], batch["hr_usm"] = self.degradation(batch["hr"])

    def on_fit_start(self) -> None:
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            raise ValueError(
                "trainer.precision 16-mixed is not supported by the GAN step (one shared loss scale for two "
                "optimizers and two backward passes through one graph); use --trainer.precision bf16-mixed "
                "(Ampere GPUs and newer, recent CPUs) or 32"
            )
        message = self.objective.balance_warning(self.is_gan)
        if message is not None:
            rank_zero_warn(message)

    def planned_batches(self) -> int | None:
        """Training batches this fit will run in all (resumed ones included): the least of
        ``max_batches``, ``trainer.max_steps`` (2 optimizer steps per GAN batch) and
        ``max_epochs`` full epochs; None when none of them bounds the run."""
        trainer = self.trainer
        limits = [] if self.max_batches is None else [self.max_batches]
        if trainer.max_steps is not None and trainer.max_steps >= 0:
            limits.append(trainer.max_steps // (2 if self.is_gan else 1))
        if trainer.max_epochs is not None and trainer.max_epochs >= 0 and math.isfinite(trainer.num_training_batches):
            limits.append(trainer.max_epochs * int(trainer.num_training_batches))
        return min(limits) if limits else None

    def on_train_end(self) -> None:
        self.nonfinite_guard.training_ended(self.batches_seen, self.trainer.num_training_batches)

    def on_train_start(self) -> None:
        parameters = dict(self.named_parameters())
        for name, grad in self.pending_gradients.items():
            parameters[name].grad = grad.to(parameters[name].device)
        self.pending_gradients = {}
        message = self.sa_balance.fit_to_run(self.planned_batches())
        if message is not None:
            rank_zero_info_line(message)
        if self.max_batches is not None and self.batches_seen >= self.max_batches:
            log.warning("max_batches=%d already reached (batch %d): nothing to train", self.max_batches, self.batches_seen)
            self.trainer.should_stop = True
