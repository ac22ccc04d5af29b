"""The ``salightning`` command: LightningCLI for fit / validate / test, plus tiled ``predict``.

    salightning fit --config configs/quickstart.yaml
    salightning fit --config configs/sa_esrgan_lv.yaml --trainer.devices 4
    salightning predict --ckpt_path run/checkpoints/best.ckpt --input photo.png --output out/
    salightning test --ckpt_path a.ckpt b.ckpt --test_sets Set14=data/Set14 Vid4=data/Vid4   # the paper's table
    salightning test --config configs/sa_esrgan_lv.yaml --ckpt_path best.ckpt             # LightningCLI's test loop

``salightning test`` without ``--config`` (or ``salightning evaluate``) evaluates checkpoints on
test sets like the paper's tables; with ``--config`` it is LightningCLI's test subcommand.

Networks, losses, edge extractors and optimisers are chosen in the config by ``class_path``,
so a user's own generator trains with the SA loss without touching the library.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import torch

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning import LightningDataModule, Trainer
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback

from salightning.checkpoint_io import SafeCheckpointIO, load_checkpoint_file
from salightning.module import SRGANModule
from salightning.weights import MissingWeightsError

#: Exceptions that are the user's to fix: printed as one message, not a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, MissingWeightsError, NotADirectoryError, IsADirectoryError)


_DESCRIPTION = (
    "GAN super-resolution with spatially adaptive losses. fit / validate / test take --config files "
    "and dotted overrides; `salightning predict --help`: super-resolve images, folders and videos "
    "with a checkpoint (tiled); `salightning export --help`: a checkpoint's generator as plain weights."
)


class SaveConfigEverywhere(SaveConfigCallback):
    """Save the resolved config as ``config.yaml`` in the run folder and, for experiment
    trackers such as W&B, as the ``config`` hyper-parameter of the run (rank 0 only)."""

    def save_config(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        import yaml

        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                logger.log_hyperparams({"config": config})


class SALightningCLI(LightningCLI):
    """LightningCLI with salightning's defaults (manual optimisation, re-runnable config saving)."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            SRGANModule,
            LightningDataModule,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            save_config_callback=SaveConfigEverywhere,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": "salightning", "description": _DESCRIPTION},
            args=args,
            run=run,
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # `salightning predict` is the tiled inference of salightning.predict (dispatched by main),
        # not Lightning's predict loop: leave the latter out of the help and the parser.
        commands = LightningCLI.subcommands()
        del commands["predict"]
        return commands

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        # Atomic, weights-only checkpoint files unless the config chose its own checkpoint IO.
        trainer = super().instantiate_trainer(**kwargs)
        strategy = trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = SafeCheckpointIO()
        return trainer

    def _parse_ckpt_path(self) -> None:
        # Lightning reads --ckpt_path here, before the Trainer and SafeCheckpointIO exist, and lets
        # torch.load's raw error escape: check the file first, for one message naming it.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and Path(ckpt_path).is_file():
            load_checkpoint_file(ckpt_path)
        super()._parse_ckpt_path()

    def _check_scales(self) -> None:
        model_scale = getattr(self.model.generator, "scale", None)
        data_scale = getattr(self.datamodule, "scale", None)
        if model_scale is not None and data_scale is not None and int(model_scale) != int(data_scale):
            raise ValueError(
                f"scale mismatch: model.generator.scale={model_scale} but data.scale={data_scale}; set both to the same factor"
            )

    def before_fit(self) -> None:
        self._check_scales()
        self._continue_wandb_run()

    def _continue_wandb_run(self) -> None:
        """On resume, log to the W&B run the checkpoint was written by (unless an id was given)."""
        from salightning.checkpoint_io import load_checkpoint_file
        from salightning.loggers import WandbLogger

        loggers = [lg for lg in self.trainer.loggers if isinstance(lg, WandbLogger)]
        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        if not loggers or not ckpt_path:
            return
        path = Path(ckpt_path)
        if ckpt_path == "last" and self.trainer.checkpoint_callback is not None and self.trainer.checkpoint_callback.dirpath:
            candidates = sorted(Path(self.trainer.checkpoint_callback.dirpath).glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
            path = candidates[-1] if candidates else path
        if not path.is_file():
            return
        run_id = load_checkpoint_file(path).get("salightning", {}).get("wandb_run_id")
        if run_id:
            for logger in loggers:
                logger.resume_run(run_id)

    def before_validate(self) -> None:
        self._check_scales()

    def before_test(self) -> None:
        self._check_scales()


def _predict_main(argv: list[str]) -> None:
    from jsonargparse import ArgumentParser

    from salightning.export import load_for_predict
    from salightning.predict import predict_path

    parser = ArgumentParser(prog="salightning predict", description="Super-resolve an image, a folder of images, or a video with a checkpoint.")
    parser.add_argument("--ckpt_path", type=str, required=True, help="checkpoint written by `salightning fit`, or a file written by `salightning export`")
    parser.add_argument("--generator", type=Optional[str], default=None, help="class path of the generator of an exported .pth (safetensors exports name it)")
    parser.add_argument("--generator_init_args", type=Optional[dict], default=None, help="the generator's init args for --generator, e.g. '{scale: 4}'")
    parser.add_argument("--input", type=str, required=True, help="an image, a folder of images, a folder of frames, or a video file")
    parser.add_argument("--output", type=str, required=True, help="output folder (created; inputs are never overwritten)")
    parser.add_argument("--tile", type=int, default=256, help="tiles hold at most tile x tile input pixels (the fewest equal tiles that cover the input are used), 0 = no tiling")
    parser.add_argument("--tile_overlap", type=int, default=32, help="least overlap between neighbouring tiles in input pixels (even)")
    parser.add_argument("--tile_batch", type=int, default=4, help="tiles run through the generator at once")
    parser.add_argument("--no_ema", action="store_true", help="use the raw generator even if the checkpoint has an EMA one")
    parser.add_argument("--device", type=str, default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda if available)")
    args = parser.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    generator = load_for_predict(args.ckpt_path, args.generator, args.generator_init_args, use_ema=not args.no_ema, map_location=device)
    written = predict_path(generator, args.input, args.output, tile=args.tile, overlap=args.tile_overlap, tile_batch=args.tile_batch)
    print(f"wrote {len(written)} file(s) to {Path(args.output).resolve()}")


def _export_main(argv: list[str]) -> None:
    from jsonargparse import ArgumentParser

    from salightning.export import FORMATS, export_checkpoint

    parser = ArgumentParser(prog="salightning export", description="Write a checkpoint's generator as a state dict, safetensors (with its architecture) or ONNX.")
    parser.add_argument("--ckpt_path", type=str, required=True, help="checkpoint written by `salightning fit`")
    parser.add_argument("--output", type=str, required=True, help="output file (must not exist)")
    parser.add_argument("--format", type=str, default="pth", choices=FORMATS, help="pth: torch state dict (spandrel/chaiNNer read RRDBNet); safetensors: with the architecture in its metadata; onnx: dynamic batch/height/width")
    parser.add_argument("--no_ema", action="store_true", help="export the raw generator even if the checkpoint has an EMA one")
    args = parser.parse_args(argv)
    print(f"wrote {export_checkpoint(args.ckpt_path, args.output, args.format, use_ema=not args.no_ema).resolve()}")


def _has_config(argv: list[str]) -> bool:
    return any(a == "--config" or a.startswith("--config=") or a in ("-c", "--help", "-h") for a in argv)


def _check_config_files(argv: list[str]) -> None:
    """Raise ValueError naming a ``--config`` file that is not valid YAML (jsonargparse's message
    names no file)."""
    import yaml

    paths = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg in ("--config", "-c")]
    paths += [arg.partition("=")[2] for arg in argv if arg.startswith("--config=")]
    for path in paths:
        if Path(path).is_file():
            try:
                yaml.safe_load(Path(path).read_text())
            except yaml.YAMLError as err:
                raise ValueError(f"--config {path}: not valid YAML: {err}") from None


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``salightning`` console script and ``python -m salightning``."""
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "predict":
            _predict_main(argv[1:])
        elif argv and argv[0] == "export":
            _export_main(argv[1:])
        elif argv and (argv[0] == "evaluate" or (argv[0] == "test" and not _has_config(argv))):
            from salightning.evaluate import _evaluate_main

            _evaluate_main(argv[1:])
        else:
            _check_config_files(argv)
            # LightningCLI warns when given `args` that repeat sys.argv: let it read sys.argv itself.
            SALightningCLI(args=None if from_command_line else argv)
    except USER_ERRORS as err:
        print(f"salightning: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
