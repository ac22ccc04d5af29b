"""The ``salightning`` command: LightningCLI for fit / validate / test; evaluate, predict and export.

    salightning fit --config configs/quickstart.yaml
    salightning fit --config configs/sa_esrgan_lv.yaml --trainer.devices 4
    salightning predict --ckpt_path run/checkpoints/best.ckpt --input photo.png --output out/
    salightning evaluate --ckpt_path a.ckpt b.ckpt --test_sets Set14=data/Set14 Vid4=data/Vid4   # the paper's table
    salightning test --config configs/sa_esrgan_lv.yaml --ckpt_path best.ckpt                 # LightningCLI's test loop

``salightning --help`` lists the commands; each has its own ``--help``.

Networks, losses, edge extractors and optimisers are chosen in the config by ``class_path``,
so a user's own generator trains with the SA loss without touching the library.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning import LightningDataModule, Trainer
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger as LightningWandbLogger

from salightning.callbacks import LastCheckpoint, Preempted, ResumeValidation, RNGStates, TrainingCurves, WandbRunId
from salightning.checkpoint_io import SafeCheckpointIO
from salightning.checkpoints import NonFiniteCheckpointError, check_trusted_classes, class_paths, load_checkpoint_file, wandb_run_id
from salightning.options import CLIParser, CommandParser, reduce_union_error
from salightning.paths import check_output_not_inside
from salightning.training import SRGANModule, TrainingDiverged
from salightning.runs import RUN_DIR_ENV, RunLock, choose_run_dir, is_global_rank_zero, remove_unused_run
from salightning.weights import MissingWeightsError

#: Exceptions that are the user's to fix: printed as one message, not a traceback.
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    MissingWeightsError,
    NotADirectoryError,
    IsADirectoryError,
    TrainingDiverged,
    NonFiniteCheckpointError,
    OSError,
    MisconfigurationException,
)

#: DDP strategies that cannot train G and D from one wrapper (each backward touches one network).
_PLAIN_DDP = {"ddp", "ddp_spawn", "ddp_fork", "ddp_notebook"}
#: Variables of the launchers that start every process of a multi-node job.
_CLUSTER_VARIABLES = ("SLURM_NTASKS", "WORLD_SIZE", "LSB_JOBID", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MASTER_ADDR")


_DESCRIPTION = (
    "GAN super-resolution with spatially adaptive losses: train with --config files and dotted overrides, "
    "evaluate like the paper, predict, export."
)


class SaveConfigEverywhere(SaveConfigCallback):
    """Save the resolved config as ``config.yaml`` in the run folder and, for experiment
    trackers such as W&B, as the ``config`` hyper-parameter of the run (rank 0 only)."""

    def save_config(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        import yaml

        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            if isinstance(logger, LightningWandbLogger):
                logger.log_hyperparams({"config": config})


class SALightningCLI(LightningCLI):
    """LightningCLI with salightning's defaults (manual optimisation, re-runnable config saving)."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        self._run_lock: RunLock | None = None
        self._created: list[Path] = []  # the run folder and its parents, when this command made them
        self._env_before = os.environ.get(RUN_DIR_ENV)
        self._user_config: Any = None
        try:
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
        except BaseException:
            # Rank 0 failed or was stopped: end the ranks Lightning started, which would otherwise
            # wait in a collective for the process-group timeout (30 min). Their own failures end
            # rank 0 through Lightning's launcher.
            launcher = getattr(getattr(getattr(self, "trainer", None), "strategy", None), "launcher", None)
            if launcher is not None and hasattr(launcher, "kill"):
                launcher.kill(signal.SIGKILL)
            if self._run_lock is not None:
                self._run_lock.release()
            remove_unused_run(self._created)
            raise
        finally:
            # In-process use (tests, notebooks): the next command chooses its own run folder.
            if self._run_lock is not None:
                self._run_lock.release()
            if self._env_before is None:
                os.environ.pop(RUN_DIR_ENV, None)
            else:
                os.environ[RUN_DIR_ENV] = self._env_before

    def init_parser(self, **kwargs: Any) -> CLIParser:
        """Lightning's parser with salightning's option errors (``parser_class`` needs Lightning 2.5)."""
        from jsonargparse import ActionConfigFile
        from pytorch_lightning import __version__ as lightning_version

        kwargs.setdefault("dump_header", [f"pytorch_lightning=={lightning_version}"])
        parser = CLIParser(**kwargs)
        parser.add_argument("-c", "--config", action=ActionConfigFile, help="Path to a configuration file in json or yaml format.")
        return parser

    # -- before anything is built: devices, strategy, intervals, the run folder ------------------

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        self._user_config = copy.deepcopy(config)
        gan = config.model.get("discriminator") is not None
        world = _check_devices(config.trainer)
        _choose_strategy(config.trainer, gan, world)
        if gan and config.trainer.get("max_steps") not in (None, -1):
            raise ValueError(
                f"--trainer.max_steps {config.trainer.max_steps}: Lightning counts optimizer steps, two per batch in a "
                "GAN stage (one when a step is skipped); give the number of training batches as --model.max_batches "
                "instead (the paper's and BasicSR's iterations)"
            )
        self._lay_out_run(config)

    def _lay_out_run(self, config: Namespace) -> None:
        """Point every output of this command into its own run folder (see :mod:`salightning.runs`)."""
        trainer = config.trainer
        root = Path(trainer.get("default_root_dir") or "runs/salightning")
        inputs = _input_paths(config)
        check_output_not_inside(inputs, os.environ.get(RUN_DIR_ENV) or root, "--trainer.default_root_dir")
        if self.subcommand == "fit":
            run_dir = choose_run_dir(root, config.get("ckpt_path"))
        else:  # validate / test: beside the runs, never over a training run's metrics
            run_dir = choose_run_dir(root / self.subcommand) if not os.environ.get(RUN_DIR_ENV) else Path(os.environ[RUN_DIR_ENV]) / self.subcommand
        if is_global_rank_zero() and not os.environ.get(RUN_DIR_ENV):
            self._created = [p for p in (run_dir, *run_dir.parents) if not p.exists()]  # removed again if the command fails early
            if self.subcommand == "fit":
                self._run_lock = RunLock(run_dir)
                os.environ[RUN_DIR_ENV] = str(run_dir)  # processes Lightning starts write here too
        trainer.default_root_dir = str(run_dir)
        for callback in trainer.get("callbacks") or []:
            if _is_subclass(callback, "pytorch_lightning.callbacks.ModelCheckpoint") and callback.init_args.get("dirpath") is None:
                callback.init_args.dirpath = str(run_dir / "checkpoints")
            for option in ("dirpath", "save_dir"):
                if (callback.get("init_args") or Namespace()).get(option):
                    check_output_not_inside(inputs, callback.init_args[option], f"{callback.class_path.rpartition('.')[2]} {option}")
        if trainer.get("logger") is False:
            return
        loggers = trainer.logger if isinstance(trainer.get("logger"), list) else [trainer.logger] if isinstance(trainer.get("logger"), Namespace) else []
        for logger in loggers:
            if logger.init_args.get("save_dir") is None:
                wandb = _is_subclass(logger, "pytorch_lightning.loggers.WandbLogger")
                logger.init_args.save_dir = os.environ["WANDB_DIR"] if wandb and os.environ.get("WANDB_DIR") else str(run_dir)
            check_output_not_inside(inputs, logger.init_args.save_dir, f"{logger.class_path.rpartition('.')[2]} save_dir")
        if not any(_is_subclass(lg, "pytorch_lightning.loggers.CSVLogger") for lg in loggers):
            # A local metrics file beside any tracker, <run>/logs/metrics.csv, continued by a resume;
            # first, so that trainer.log_dir (config.yaml) is that folder too.
            csv = Namespace(class_path="salightning.loggers.CSVLogger", init_args=Namespace(save_dir=str(run_dir), name="logs"))
            loggers = [csv, *loggers]
        trainer.logger = loggers

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
        if self.subcommand == "fit":
            # LastCheckpoint: SIGTERM / SIGINT give a checkpoint and a non-zero exit; RNGStates: bit-exact
            # resume; ResumeValidation: the validation a checkpoint was written before runs after a resume;
            # TrainingCurves: curves.png in the run folder.
            for kind in (LastCheckpoint, RNGStates, ResumeValidation, WandbRunId, TrainingCurves):
                if not any(isinstance(cb, kind) for cb in trainer.callbacks):
                    trainer.callbacks.append(kind())
        for callback in trainer.callbacks:
            if isinstance(callback, SaveConfigCallback) and self._user_config is not None:
                callback.config = self._user_config  # the config as given: re-runnable into a new run folder
        return trainer

    def _parse_ckpt_path(self) -> None:
        # Lightning reads --ckpt_path here, before the Trainer and SafeCheckpointIO exist, and lets
        # torch.load's raw error escape: check the file first, for one message naming it.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and Path(ckpt_path).is_file():
            # Its hyper-parameters become the model's config: only classes the user's config names may be built.
            named = ["torch", *(c.rpartition(".")[0] for c in class_paths(self.config[subcommand].as_dict()))]
            hparams = load_checkpoint_file(ckpt_path).get("hyper_parameters", {})
            check_trusted_classes(hparams, named, f"--ckpt_path {ckpt_path}", "by naming that class in your config")
        super()._parse_ckpt_path()

    def _check_scales(self) -> None:
        model_scale = getattr(self.model.generator, "scale", None)
        data_scale = getattr(self.datamodule, "scale", None)
        if model_scale is not None and data_scale is not None and int(model_scale) != int(data_scale):
            raise ValueError(
                f"scale mismatch: model.generator.scale={model_scale} but data.scale={data_scale}; set both to the same factor"
            )
        # Image datamodules have no num_frames: their samples are single frames.
        model_frames = getattr(self.model.generator, "num_frames", None)
        data_frames = getattr(self.datamodule, "num_frames", 1) if self.datamodule is not None else None
        if model_frames is not None and data_frames is not None and int(model_frames) != int(data_frames):
            generator = type(self.model.generator).__name__
            data = type(self.datamodule).__name__
            raise ValueError(
                f"frames mismatch: model.generator ({generator}) takes {model_frames} frame(s) per sample but "
                f"data ({data}) gives {data_frames}; use a video datamodule with num_frames={model_frames} "
                "for a video generator, an image datamodule for an image generator"
            )

    def _note_eval_crop(self) -> None:
        size = getattr(self.datamodule, "eval_patch_size", None)
        if size and is_global_rank_zero():
            print(
                f"salightning: validation/test metrics on the centre {size}x{size} HR crop of each image (data.eval_patch_size, "
                "for speed); data.eval_patch_size: null scores whole images, as `salightning evaluate` does",
                file=sys.stderr,
            )

    def before_fit(self) -> None:
        self._check_scales()
        self._note_eval_crop()
        self._continue_wandb_run()

    def _continue_wandb_run(self) -> None:
        """On resume, log to the W&B run the checkpoint was written by (unless an id was given)."""
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
        run_id = wandb_run_id(load_checkpoint_file(path))
        if run_id:
            for logger in loggers:
                logger.resume_run(run_id)

    def before_validate(self) -> None:
        self._check_scales()
        self._note_eval_crop()

    def before_test(self) -> None:
        self._check_scales()
        self._note_eval_crop()


# Options of the shipped datamodules and of the module that name files or folders to read.
DATA_INPUT_OPTIONS = ("train", "val", "test", "train_hr", "train_lr", "val_hr", "val_lr", "test_hr", "test_lr")


def _input_paths(config: Namespace) -> list[str]:
    """The data folders, the pretrained generator and the checkpoint a command reads, as given
    (``package:`` files excluded: they are inside salightning)."""
    found: list[str] = []
    data = config.get("data")
    init_args = (data.get("init_args") if isinstance(data, Namespace) else None) or Namespace()
    for option in DATA_INPUT_OPTIONS:
        value = init_args.get(option)
        found += [str(v) for v in (value if isinstance(value, list) else [value]) if v]
    for value in (config.model.get("pretrained_generator"), config.get("ckpt_path")):
        if value and value != "last" and not str(value).startswith("package:"):
            found.append(str(value))
    return found


def _is_subclass(node: Any, class_path: str) -> bool:
    """Whether a config node ``{class_path, init_args}`` names a subclass of ``class_path``."""
    import importlib

    if not isinstance(node, Namespace) or not isinstance(node.get("class_path"), str):
        return False
    module, _, name = class_path.rpartition(".")
    base = getattr(importlib.import_module(module), name)
    owner, _, cls_name = node.class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(owner), cls_name)
    except (ImportError, AttributeError):
        return False
    return isinstance(cls, type) and issubclass(cls, base)


def _device_count(accelerator: Any, devices: Any) -> int:
    """How many devices ``--trainer.devices`` asks for on one node."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    text = str(devices).strip()
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    if text in ("auto", "-1"):
        cuda = str(accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        return torch.cuda.device_count() if cuda else 1
    return int(text)


def _check_devices(trainer: Namespace) -> int:
    """Refuse device and node counts the machine cannot give (Lightning would start them and
    hang); return the number of processes."""
    accelerator, devices = trainer.get("accelerator", "auto"), trainer.get("devices", "auto")
    try:
        count = _device_count(accelerator, devices)
    except ValueError:
        raise ValueError(f"--trainer.devices {devices!r}: expected a number, a list of device indices, or auto") from None
    cuda = str(accelerator) in ("gpu", "cuda") or (str(accelerator) == "auto" and torch.cuda.is_available())
    if cuda:
        available = torch.cuda.device_count()
        if count > available:
            raise ValueError(f"--trainer.devices {devices}: this machine has {available} CUDA device(s); use at most {available}")
    elif count > (os.cpu_count() or 1):
        raise ValueError(f"--trainer.devices {devices}: this machine has {os.cpu_count()} CPU cores; use at most that many processes")
    nodes = int(trainer.get("num_nodes") or 1)
    if nodes > 1 and not any(os.environ.get(var) for var in _CLUSTER_VARIABLES):
        raise ValueError(
            f"--trainer.num_nodes {nodes}: no cluster launcher found (SLURM's srun, torchrun, LSF, MPI); start one "
            "process per device on every node with it (see docs/cluster.md), or use --trainer.num_nodes 1"
        )
    return count * nodes


def _choose_strategy(trainer: Namespace, gan: bool, world: int) -> None:
    """A GAN stage on several processes needs DDP that looks for unused parameters (the G step
    leaves D without gradients and the D step G): choose it for ``strategy: auto``, refuse plain DDP."""
    strategy = trainer.get("strategy", "auto")
    if not gan or world < 2 or not isinstance(strategy, str):
        return
    if strategy == "auto":
        trainer.strategy = "ddp_find_unused_parameters_true"
    elif strategy in _PLAIN_DDP:
        raise ValueError(
            f"--trainer.strategy {strategy} cannot train a GAN stage: each backward pass reaches only one of G and D, "
            "which plain DDP refuses; use --trainer.strategy auto (chooses ddp_find_unused_parameters_true)"
        )


def _predict_main(argv: list[str]) -> None:
    from salightning.predict import add_arguments, main as predict_main

    parser = CommandParser(prog="salightning predict", description="Super-resolve an image, a folder of images, or a video with a checkpoint.")
    add_arguments(parser)
    predict_main(parser.parse_args(argv))


def _export_main(argv: list[str]) -> None:
    from salightning.export import FORMATS, export_checkpoint
    from salightning.checkpoints import TRUST_HELP

    parser = CommandParser(prog="salightning export", description="Write a checkpoint's generator as a state dict, safetensors (with its architecture) or ONNX.")
    parser.add_argument("--ckpt_path", type=str, required=True, help="checkpoint written by `salightning fit`")
    parser.add_argument("--output", type=str, required=True, help="output file (must not exist)")
    parser.add_argument("--format", type=str, default="pth", choices=FORMATS, help="pth: torch state dict (spandrel/chaiNNer read RRDBNet); safetensors: with the architecture in its metadata; onnx: dynamic batch/height/width")
    parser.add_argument("--no_ema", action="store_true", help="export the raw generator even if the checkpoint has an EMA one")
    parser.add_argument("--trust_module", type=str, nargs="+", default=[], help=TRUST_HELP)
    args = parser.parse_args(argv)
    print(f"wrote {export_checkpoint(args.ckpt_path, args.output, args.format, use_ema=not args.no_ema, trusted_modules=args.trust_module).resolve()}")


def _plot_main(argv: list[str]) -> None:
    from jsonargparse import ArgumentParser

    from salightning.curves import add_arguments, main as plot_main

    parser = ArgumentParser(prog="salightning plot", description="Draw a run's curves (losses, SA share and beta2, learning rates, validation metrics) as a PNG.")
    add_arguments(parser)
    plot_main(parser.parse_args(argv))


def _has_config(argv: list[str]) -> bool:
    return any(a == "--config" or a.startswith("--config=") or a in ("-c", "--help", "-h") for a in argv)


#: The commands of ``salightning``: LightningCLI's loops, then salightning's own.
COMMANDS = {
    "fit": "train a model: stage 1 (PSNR) or stage 2 (GAN) from --config files and dotted overrides",
    "validate": "run a config's validation set through a model (LightningCLI)",
    "test": "run a config's test set through a model (LightningCLI); needs --config",
    "evaluate": "the paper's table for checkpoints x test sets: PSNR/SSIM/LPIPS, edge/flat PSNR, bicubic row",
    "predict": "super-resolve an image, a folder of images or a video with a checkpoint or an export (tiled)",
    "export": "write a checkpoint's generator as a state dict, safetensors or ONNX",
    "degrade": "write (HR, LR) pairs as a config's degradation makes them for its generator (blind SR)",
    "plot": "draw a run's curves (losses, SA share and beta2, learning rates, validation metrics) as RUN_DIR/curves.png",
}
LIGHTNING_COMMANDS = ("fit", "validate", "test")


def _print_commands(file: Any = None) -> None:
    """``salightning --help``: one line per command (each has its own ``--help``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="salightning", description=_DESCRIPTION)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", description="`salightning COMMAND --help` for its options")
    for name, help_text in COMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    parser.print_help(file)


def _run_command(argv: list[str], from_command_line: bool) -> None:
    command = argv[0] if argv else None
    if command in (None, "-h", "--help"):
        _print_commands()
        if command is None:
            raise SystemExit(2)
        return
    if command == "--version":
        import salightning

        print(f"salightning {salightning.__version__}")
        return
    if command == "predict":
        _predict_main(argv[1:])
    elif command == "export":
        _export_main(argv[1:])
    elif command == "degrade":
        from salightning.degradations.dump import main as degrade_main

        degrade_main(argv[1:])
    elif command == "plot":
        _plot_main(argv[1:])
    elif command == "evaluate":
        from salightning.evaluate import main as evaluate_main

        evaluate_main(argv[1:])
    elif command in LIGHTNING_COMMANDS:
        if command == "test" and not _has_config(argv):
            raise ValueError(
                "salightning test runs the test set of a --config through its model (LightningCLI); to evaluate "
                "checkpoints on test sets without a config, use `salightning evaluate --ckpt_path ... --test_sets ...`"
            )
        _check_config_files(argv)
        # LightningCLI warns when given `args` that repeat sys.argv: let it read sys.argv itself.
        SALightningCLI(args=None if from_command_line else argv)
    else:
        raise ValueError(f"unknown command {command!r}; choose one of {', '.join(COMMANDS)} (`salightning --help`)")


def _check_config_files(argv: list[str]) -> None:
    """Raise ValueError naming a ``--config`` file that is not a YAML mapping (jsonargparse's
    messages name no file: "Unexpected config:", a bare codec error)."""
    import yaml

    paths = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg in ("--config", "-c")]
    paths += [arg.partition("=")[2] for arg in argv if arg.startswith("--config=")]
    for path in paths:
        if not Path(path).is_file():
            continue
        try:
            settings = yaml.safe_load(Path(path).read_bytes().decode("utf-8"))
        except UnicodeDecodeError as err:
            raise ValueError(f"--config {path}: not UTF-8 text (byte {err.start}): save it as UTF-8 YAML") from None
        except yaml.YAMLError as err:
            raise ValueError(f"--config {path}: not valid YAML: {err}") from None
        if settings is None:
            raise ValueError(f"--config {path}: the file is empty; it must be a YAML mapping of settings (see configs/)")
        if not isinstance(settings, dict):
            raise ValueError(f"--config {path}: expected a YAML mapping of settings, got a {type(settings).__name__}")


class _DropTips(logging.Filter):
    """Drops Lightning's advertising "Tip" lines (they ask for no action on this run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("\N{ELECTRIC LIGHT BULB} Tip:")


def quiet_third_party() -> None:
    """Silence what the libraries print that asks the user for nothing (each filter names one message)."""
    import warnings

    # Lightning 2.6 builds torch's deprecated LeafSpec on every batch; fixed by a Lightning release, not the user.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in logger.filters):
        logger.addFilter(_DropTips())


def _stopped_by(signum: int, frame: Any) -> None:
    # Outside training (LastCheckpoint handles the signals there): stop at once, one line, never status 0.
    name = signal.Signals(signum).name
    raise Preempted(128 + signum, f"salightning: stopped by {name} outside training; no checkpoint written (earlier files are intact)")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``salightning`` console script and ``python -m salightning``."""
    import threading

    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_third_party()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _stopped_by) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _run_command(argv, from_command_line)
    except USER_ERRORS as err:
        print(f"salightning: error: {reduce_union_error(str(err))}", file=sys.stderr)
        raise SystemExit(2) from None
    except Preempted as stop:
        if stop.message:
            print(stop.message, file=sys.stderr, flush=True)
        raise SystemExit(stop.code) from None
    except SIGTERMException:  # Lightning's own SIGTERM stop (validate, test) exits with status 0
        print("salightning: stopped by SIGTERM; no checkpoint written (earlier files are intact)", file=sys.stderr, flush=True)
        raise SystemExit(128 + signal.SIGTERM) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def reduce_union_error(message: str) -> str:
    """jsonargparse's "Does not validate against any of the Union subtypes" lists one error per
    subtype (``Module | None`` gives "Expected a <class 'NoneType'>"); keep the one that matters,
    with the class it came from."""
    if "Does not validate against any of the Union subtypes" not in message or "Errors:" not in message:
        return message
    body = message.split("Errors:", 1)[1].split("\nGiven value type:", 1)[0]
    errors = [e.strip() for e in re.split(r"\n  - ", "\n" + body.strip("\n")) if e.strip()]
    meaningful = [e for e in errors if not e.startswith("Expected a ")]
    if len(meaningful) != 1:
        return message
    found = re.search(r"class_path='([\w.]+)'", message)
    where = f"{found.group(1)}: " if found else ""
    return where + "\n".join(line[4:] if line.startswith("    ") else line for line in meaningful[0].splitlines())
