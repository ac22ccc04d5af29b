"""Bad input, systematically (issue 9): the CLI, configs, data, checkpoints and predict.

Every case runs ``salightning ...`` in this process (:func:`salightning.cli.main`, what the
console script runs) and asserts a non-zero exit, one message without a traceback that names
the culprit (the option or the file), and that no file of the user (data, inputs, configs,
checkpoints) was modified, created or deleted. Each case is a function building the command
line from a prepared user folder; the case's id says what is wrong.
"""

from __future__ import annotations

import copy
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from conftest import load_photo, TINY_GENERATOR, fit_style_checkpoint, make_project, save_png, tiny_config, tree_digest, write_config

from salightning.models import RRDBNet


@dataclass
class User:
    """A user's files: images, clips, inputs, configs and checkpoints; runs write under ``out``."""

    root: Path
    out: Path
    config: Path
    video_config: Path

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def variant(self, name: str, edit: Callable[[dict], None], video: bool = False) -> Path:
        """A copy of the (video) config with ``edit`` applied, saved as ``<name>.yaml``."""
        config = yaml.safe_load((self.video_config if video else self.config).read_text())
        edit(config)
        return write_config(self.path("configs", f"{name}.yaml"), config)


def _pan(photo: torch.Tensor, count: int) -> list[torch.Tensor]:
    """A camera panning over a real photo by a few pixels per frame: (3, 48, 64) frames."""
    return [photo[:, 60 + 2 * t : 108 + 2 * t, 90 + 3 * t : 154 + 3 * t] for t in range(count)]


def _nan_tiff(path: Path) -> Path:
    """A 32-bit float greyscale TIFF (a real photo's luminance) with one NaN pixel."""
    from conftest import load_photo

    grey = load_photo("astronaut").mean(0)[:64, :64].numpy().astype(np.float32)
    grey[10, 20] = np.nan
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grey, mode="F").save(path)
    return path


@pytest.fixture(scope="module")
def user(tmp_path_factory, photos) -> User:
    root = tmp_path_factory.mktemp("user")
    out = tmp_path_factory.mktemp("runs")
    make_project(root, photos)
    config = tiny_config(root, max_epochs=1)
    # Runs write logs and checkpoints outside the user's folder.
    config["trainer"]["default_root_dir"] = str(out)
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(out)
    config["trainer"]["callbacks"][0]["init_args"]["dirpath"] = str(out / "checkpoints")
    config_path = write_config(root / "configs" / "config.yaml", config)

    video = copy.deepcopy(config)
    video["model"]["generator"] = {
        "class_path": "salightning.models.VSRResNet",
        "init_args": {"num_frames": 3, "frame_features": 4, "num_features": 8, "num_blocks": 1, "scale": 4},
    }
    video["data"] = {
        "class_path": "salightning.data.VideoSRDataModule",
        "init_args": {
            "train": str(root / "clips"), "val": str(root / "clips"), "num_frames": 3, "scale": 4, "patch_size": 32,
            "batch_size": 2, "samples_per_epoch": 4, "num_workers": 0, "eval_patch_size": 32, "upsample_input": True,
        },
    }
    video_path = write_config(root / "configs" / "video.yaml", video)

    for t, frame in enumerate(_pan(photos[0], 7)):
        save_png(frame, root / "clips" / "clip0" / f"frame_{t:03d}.png")
    (root / "videos").mkdir()
    (root / "videos" / "empty.mp4").write_bytes(b"")
    (root / "empty").mkdir()
    (root / "garbage").mkdir()
    for i, photo in enumerate(photos[:3]):
        save_png(photo[:, 100:196, 100:196], root / "garbage" / f"photo{i}.png")
    (root / "garbage" / "notes.png").write_text("not an image, despite the name\n")
    (root / "nan_train").mkdir()
    for i, photo in enumerate(photos[:3]):
        save_png(photo[:, 100:196, 100:196], root / "nan_train" / f"photo{i}.png")
    _nan_tiff(root / "nan_train" / "float_with_nan.tif")
    _nan_tiff(root / "inputs" / "float_with_nan.tif")
    save_png(photos[1][:, 100:132, 150:190], root / "inputs" / "lr.png")
    (root / "inputs" / "README.txt").write_text("input notes\n")
    (root / "inputs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (root / "inputs" / "empty_folder").mkdir()
    (root / "inputs" / "existing_output.png").write_bytes((root / "inputs" / "lr.png").read_bytes())
    # paired folders whose LR partner has the wrong size for scale 4
    for i, photo in enumerate(photos[:2]):
        save_png(photo[:, 100:196, 100:196], root / "paired_hr" / f"pair{i}.png")
        save_png(photo[:, 100:130, 100:130], root / "paired_lr" / f"pair{i}.png")  # 30x30, not 24x24

    (root / "ckpts").mkdir()
    torch.manual_seed(0)
    torch.save(RRDBNet(**{**TINY_GENERATOR, "scale": 2}).state_dict(), root / "ckpts" / "x2_weights.pth")
    x2 = RRDBNet(**{**TINY_GENERATOR, "scale": 2})
    torch.save(fit_style_checkpoint(x2, hyper_parameters={"generator": {"class_path": "salightning.models.RRDBNet", "init_args": {**TINY_GENERATOR, "scale": 2}}}),
               root / "ckpts" / "x2_fit.ckpt")
    # a fit checkpoint whose config says x4 but whose weights are an x2 network's
    mislabelled = fit_style_checkpoint(x2)
    torch.save(mislabelled, root / "ckpts" / "x4_config_x2_weights.ckpt")
    return User(root, out, config_path, video_path)


# --------------------------------------------------------------------------------------------
# The cases: id -> (command line, culprits the message must name)
# --------------------------------------------------------------------------------------------

Case = Callable[[User], tuple[list[Any], list[str]]]
CASES: dict[str, Case] = {}
XFAIL: dict[str, str] = {}


def case(name: str, xfail: str | None = None) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES[name] = fn
        if xfail:
            XFAIL[name] = xfail
        return fn

    return register


def fit(u: User, *args: Any, config: Path | None = None) -> list[Any]:
    return ["fit", "--config", config or u.config, *args]


# -- the command line and configs --


@case("unknown-option")
def _(u):
    return fit(u, "--model.adversarial_wieght", "0.1"), ["adversarial_wieght"]


@case("unknown-key-in-config-file")
def _(u):
    return fit(u, config=u.variant("typo", lambda c: c["data"]["init_args"].update(patchsize=32))), ["patchsize"]


@case("wrong-type")
def _(u):
    return fit(u, "--data.init_args.batch_size", "two"), ["batch_size", "two"]


@case("missing-config-file")
def _(u):
    return fit(u, config=u.path("configs", "no_such_config.yaml")), ["no_such_config.yaml"]


@case("malformed-yaml")
def _(u):
    path = u.path("configs", "malformed.yaml")
    path.write_text("model:\n  generator: [unclosed\ntrainer: {}\n")
    return fit(u, config=path), ["malformed.yaml"]


@case("config-not-utf8")
def _(u):
    path = u.path("configs", "latin1.yaml")
    path.write_bytes("# r\xe9glages\nmodel: {}\n".encode("latin-1"))
    return fit(u, config=path), ["latin1.yaml", "UTF-8"]


@case("empty-config")
def _(u):
    path = u.path("configs", "empty.yaml")
    path.write_text("")
    return fit(u, config=path), ["empty.yaml", "empty"]


@case("config-not-a-mapping")
def _(u):
    path = u.path("configs", "a_list.yaml")
    path.write_text("- model\n- trainer\n")
    return fit(u, config=path), ["a_list.yaml", "mapping"]


@case("run-folder-inside-the-training-data")
def _(u):
    train = yaml.safe_load(u.config.read_text())["data"]["init_args"]["train_hr"]
    return fit(u, "--trainer.default_root_dir", Path(train) / "runs"), ["default_root_dir", "is on or inside the input"]


@case("checkpoint-folder-inside-the-validation-data")
def _(u):
    def edit(c):
        val = c["data"]["init_args"]["val_hr"]
        c["trainer"]["callbacks"] = [{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": {"dirpath": f"{val}/../{Path(val).name}/ckpts"}}]

    return fit(u, config=u.variant("ckpt_in_val", edit)), ["ModelCheckpoint dirpath", "is on or inside the input"]


@case("logger-folder-is-the-training-data")
def _(u):
    def edit(c):
        c["trainer"]["logger"] = {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": c["data"]["init_args"]["train_hr"]}}

    return fit(u, config=u.variant("logger_in_train", edit)), ["CSVLogger save_dir", "is on or inside the input"]


@case("validation-image-smaller-than-the-discriminator")
def _(u):
    photo = load_photo("astronaut")
    save_png(photo[:, 100:124, 100:124], u.path("small_val", "tiny_val.png"))  # 24x24 < the 32x32 D input
    return fit(u, "--data.init_args.val_hr", u.path("small_val"), "--data.init_args.eval_patch_size", "null"), ["tiny_val", "32x32", "eval_patch_size"]


@case("unknown-class")
def _(u):
    return fit(u, "--model.generator.class_path", "salightning.models.NoSuchNet"), ["NoSuchNet"]


@case("negative-loss-weight")
def _(u):
    return fit(u, "--model.adversarial_weight", "-1"), ["adversarial_weight"]


@case("negative-pixel-coefficient")
def _(u):
    return fit(u, "--model.pixel_loss.init_args.beta1", "-0.5"), ["beta1", "-0.5"]


@case("even-window-size")
def _(u):
    return fit(u, "--model.pixel_loss.init_args.edge_extractor.init_args.window_size", "4"), ["window_size", "4"]


@case("ema-decay-out-of-range")
def _(u):
    return fit(u, "--model.ema_decay", "1.5"), ["ema_decay", "1.5"]


@case("decreasing-lr-milestones")
def _(u):
    return fit(u, "--model.lr_milestones", "[10, 5]"), ["lr_milestones"]


@case("discriminator-size-not-a-power-of-two")
def _(u):
    return fit(u, "--model.discriminator.init_args.input_size", "48"), ["input_size", "48"]


@case("patch-size-not-a-multiple-of-scale")
def _(u):
    return fit(u, "--data.init_args.patch_size", "30"), ["patch_size", "30"]


@case("zero-patch-size")
def _(u):
    return fit(u, "--data.init_args.patch_size", "0"), ["patch_size"]


@case("patch-larger-than-the-images")
def _(u):
    return fit(u, "--data.init_args.patch_size", "128"), ["patch_size=128", "photo0.png"]


@case("samples-per-epoch-below-batch-size")
def _(u):
    return fit(u, "--data.init_args.samples_per_epoch", "1"), ["samples_per_epoch"]


@case("model-and-data-scale-differ")
def _(u):
    return fit(u, "--data.init_args.scale", "2"), ["scale", "data.scale=2"]


# Settings that once let a run write all-NaN checkpoints (issue 13): refused at construction.
SETTINGS = [  # (option, value, what the message names)
    ("lr_gamma", ".nan", ["model.lr_gamma", "nan"]),
    ("lr_gamma", "0", ["model.lr_gamma", "(0, 1]"]),
    ("lr_gamma", "-1", ["model.lr_gamma", "-1"]),
    ("lr_gamma", "1.5", ["model.lr_gamma", "1.5"]),
    ("grad_clip_norm", "-1", ["model.grad_clip_norm", "-1"]),
    ("grad_clip_norm", ".inf", ["model.grad_clip_norm", "inf"]),
    ("sa_calibration_batches", "0", ["model.sa_calibration_batches", ">= 1"]),
    ("sa_calibration_batches", "-5", ["model.sa_calibration_batches", "-5"]),
    ("max_batches", "-3", ["model.max_batches", "-3"]),
    ("adversarial_weight", ".inf", ["model.adversarial_weight", "inf"]),
    ("perceptual_weight", ".nan", ["model.perceptual_weight", "nan"]),
    ("tv_weight", ".inf", ["model.tv_weight", "inf"]),
    ("optimizer_g.init_args.lr", ".inf", ["model.optimizer_g lr", "inf"]),
    ("optimizer_g.init_args.lr", ".nan", ["model.optimizer_g lr", "nan"]),
    ("optimizer_d.init_args.lr", "0", ["model.optimizer_d lr", "0"]),
    ("pixel_loss.init_args.beta1", ".nan", ["beta1", "nan"]),
    ("pixel_loss.init_args.beta2", ".inf", ["beta2", "inf"]),
    # torch's own messages for these name no option
    ("optimizer_g.init_args.betas", "[1.5, 0.99]", ["model.optimizer_g betas", "[0, 1)", "1.5"]),
    ("optimizer_d.init_args.betas", "[0.9]", ["model.optimizer_d", "betas", "tuple with 2 elements"]),  # jsonargparse's check
    ("optimizer_g.init_args.eps", "-0.001", ["model.optimizer_g eps", "-0.001"]),
    ("optimizer_d.init_args.weight_decay", "-0.1", ["model.optimizer_d weight_decay", "-0.1"]),
    # accepted, but the first step explodes the weights: the run stops naming divergence, before any "best"
    ("optimizer_g.init_args.lr", "1e30", ["diverged", "validation loss is"]),
]
for _option, _value, _culprits in SETTINGS:
    case(f"setting-{_option.replace('.init_args.', '-')}-{_value.lstrip('.')}")(
        lambda u, option=_option, value=_value, culprits=_culprits: (fit(u, f"--model.{option}", value), culprits)
    )


@case("negative-max-epochs")
def _(u):
    return fit(u, "--trainer.max_epochs", "-5"), ["max_epochs", "-5"]


# -- data --


@case("missing-data-folder")
def _(u):
    return fit(u, "--data.init_args.train_hr", u.path("no_such_folder")), ["train_hr", "no_such_folder"]


@case("empty-data-folder")
def _(u):
    return fit(u, "--data.init_args.train_hr", u.path("empty")), ["train_hr", str(u.path("empty"))]


@case("corrupt-image")
def _(u):
    return fit(u, "--data.init_args.train_hr", u.path("garbage")), ["notes.png"]


@case("nan-in-an-image")
def _(u):
    return fit(u, "--data.init_args.train_hr", u.path("nan_train")), ["float_with_nan.tif"]


@case("lr-partner-of-the-wrong-size")
def _(u):
    return fit(u, "--data.init_args.train_hr", u.path("paired_hr"), "--data.init_args.train_lr", u.path("paired_lr")), ["pair0.png", "30x30"]


@case("zero-length-video")
def _(u):
    return fit(u, "--data.init_args.train", u.path("videos"), config=u.video_config), ["empty.mp4"]


@case("even-num-frames")
def _(u):
    return fit(u, "--data.init_args.num_frames", "4", config=u.video_config), ["num_frames", "4"]


@case("model-and-data-num-frames-differ")
def _(u):
    return fit(u, "--data.init_args.num_frames", "5", config=u.video_config), ["num_frames=3", "gives 5"]


@case("video-generator-with-image-data")
def _(u):
    image_data = yaml.safe_load(u.config.read_text())["data"]
    config = u.variant("video_model_image_data", lambda c: c.update(data=image_data), video=True)
    return fit(u, config=config), ["VSRResNet", "ImageSRDataModule", "num_frames=3"]


@case("image-generator-with-video-data")
def _(u):
    video_data = yaml.safe_load(u.video_config.read_text())["data"]
    config = u.variant("image_model_video_data", lambda c: c.update(data=video_data))
    return fit(u, config=config), ["RRDBNet", "VideoSRDataModule", "gives 3"]


# -- checkpoints --


@case("missing-checkpoint")
def _(u):
    return fit(u, "--ckpt_path", u.path("ckpts", "no_such.ckpt")), ["no_such.ckpt"]


@case("wrong-scale-pretrained-weights")
def _(u):
    return fit(u, "--model.pretrained_generator", u.path("ckpts", "x2_weights.pth")), ["x2_weights.pth", "scale"]


@case("wrong-scale-checkpoint-to-resume")
def _(u):
    # Lightning rebuilds the model from the checkpoint's hyper-parameters: an x2 generator for x4 data
    return fit(u, "--ckpt_path", u.path("ckpts", "x2_fit.ckpt")), ["scale", "data.scale=4"]


@case("predict-wrong-scale-weights")
def _(u):
    return predict(u, u.path("ckpts", "x4_config_x2_weights.ckpt")), ["x4_config_x2_weights.ckpt", "do not match"]


@case("predict-checkpoint-is-a-folder")
def _(u):
    return predict(u, u.path("ckpts")), [str(u.path("ckpts"))]


# -- predict --


def predict(u: User, ckpt: Path, input_: Path | None = None, *args: Any, output: Path | None = None) -> list[Any]:
    return ["predict", "--ckpt_path", ckpt, "--input", input_ or u.path("inputs", "lr.png"), "--output", output or u.out / "predicted", *args]


def _good(u: User) -> Path:
    return u.path("ckpts", "x4_fit.ckpt")


@case("predict-missing-input")
def _(u):
    return predict(u, _good(u), u.path("inputs", "no_such.png")), ["--input", "no_such.png"]


@case("predict-input-not-an-image")
def _(u):
    return predict(u, _good(u), u.path("inputs", "README.txt")), ["README.txt"]


@case("predict-corrupt-image")
def _(u):
    return predict(u, _good(u), u.path("inputs", "broken.png")), ["broken.png"]


@case("predict-nan-in-an-image")
def _(u):
    return predict(u, _good(u), u.path("inputs", "float_with_nan.tif")), ["float_with_nan.tif"]


@case("predict-empty-folder")
def _(u):
    return predict(u, _good(u), u.path("inputs", "empty_folder")), ["--input", "empty_folder"]


@case("predict-zero-length-video")
def _(u):
    return predict(u, _good(u), u.path("videos", "empty.mp4")), ["empty.mp4"]


@case("predict-negative-tile")
def _(u):
    return predict(u, _good(u), None, "--tile", "-8"), ["tile=-8"]


@case("predict-output-is-an-existing-file")
def _(u):
    return predict(u, _good(u), output=u.path("inputs", "existing_output.png")), ["--output", "existing_output.png"]


@case("predict-into-the-input-folder")
def _(u):
    return predict(u, _good(u), output=u.path("inputs")), ["--output"]


@case("predict-over-an-unrelated-existing-file")
def _(u):
    # --input d/sub --output d: d/b.png is no input, but an output would replace it
    save_png(load_photo("astronaut")[:, 100:124, 100:132], u.path("d", "sub", "b.png"))
    save_png(load_photo("chelsea")[:, :8, :8], u.path("d", "b.png"))
    return predict(u, _good(u), u.path("d", "sub"), output=u.path("d")), [str(u.path("d", "b.png")), "--overwrite"]


@case("predict-overwrite-onto-an-input-through-a-symlink")
def _(u):
    save_png(load_photo("astronaut")[:, 100:124, 100:132], u.path("e", "sub", "b.png"))
    if not u.path("e", "b.png").is_symlink():
        u.path("e", "b.png").symlink_to(u.path("e", "sub", "b.png"))
    return predict(u, _good(u), u.path("e", "sub"), "--overwrite", output=u.path("e")), ["b.png", "is an input"]


@case("evaluate-over-existing-results")
def _(u):
    u.path("evaluation").mkdir(exist_ok=True)
    u.path("evaluation", "results.csv").write_text("an earlier evaluation\n")
    argv = ["evaluate", "--ckpt_path", _good(u), "--test_sets", f"t={u.path('paired_hr')}", "--output", u.path("evaluation"), "--lpips", "none"]
    return argv, [str(u.path("evaluation", "results.csv")), "--overwrite"]


@case("export-over-an-existing-file")
def _(u):
    return ["export", "--ckpt_path", _good(u), "--output", u.path("ckpts", "x2_weights.pth")], ["x2_weights.pth", "exists"]


# --------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_checkpoint(user) -> Path:
    """A valid x4 checkpoint as `salightning fit` writes it (predict's inputs are the culprits)."""
    path = user.path("ckpts", "x4_fit.ckpt")
    torch.manual_seed(0)
    torch.save(fit_style_checkpoint(RRDBNet(**TINY_GENERATOR)), path)
    return path


def run(argv: list[Any], capsys) -> tuple[int | None, str]:
    """(exit code, stderr) of ``salightning <argv>``; code None when an exception escaped main()."""
    from salightning.cli import main

    try:
        main([str(a) for a in argv])
        code: int | None = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except Exception:  # noqa: BLE001 - an escaping exception is what the test reports
        code = None
        print(traceback.format_exc(), file=sys.stderr)
    return code, capsys.readouterr().err


def _params() -> list[Any]:
    marks = lambda name: [pytest.mark.xfail(strict=True, raises=AssertionError, reason=XFAIL[name])] if name in XFAIL else []
    return [pytest.param(name, id=name, marks=marks(name)) for name in CASES]


@pytest.mark.parametrize("name", _params())
def test_bad_input_exits_non_zero_naming_the_culprit_and_touches_no_user_file(name, user, good_checkpoint, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["salightning"])
    monkeypatch.chdir(user.out)
    argv, culprits = CASES[name](user)
    before = tree_digest(user.root)
    code, err = run(argv, capsys)
    assert code is not None, f"an exception escaped instead of a message:\n{err[-3000:]}"
    assert code != 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    for culprit in culprits:
        assert culprit in err, f"{culprit!r} not named in:\n{err[-3000:]}"
    assert tree_digest(user.root) == before


# --------------------------------------------------------------------------------------------
# Failed runs leave no run folder
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command, option", [("fit", "--data.init_args.train_hr"), ("fit", "--model.pretrained_generator"), ("validate", "--data.init_args.val_hr")]
)
def test_a_run_failing_on_a_missing_path_leaves_no_folder(user, good_checkpoint, tmp_path, capsys, monkeypatch, command, option):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["salightning"])
    monkeypatch.chdir(tmp_path)
    # the logs go into the run folder, as with the shipped configs
    config = user.variant("logs_in_the_run_folder", lambda c: c["trainer"].pop("logger"))
    earlier = tmp_path / "experiment" / "version_0"
    (earlier / "checkpoints").mkdir(parents=True)
    (earlier / "checkpoints" / "last.ckpt").write_bytes(good_checkpoint.read_bytes())
    for root in (tmp_path / "new" / "experiment", tmp_path / "experiment"):
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        code, err = run([command, "--config", config, option, tmp_path / "no_such_path", "--trainer.default_root_dir", root], capsys)
        assert code == 2 and "no_such_path" in err, err[-3000:]
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no new folder, not even the root


def test_ckpt_path_last_never_picks_a_folder_without_a_checkpoint(tmp_path):
    import os
    import time

    from salightning.runs import choose_run_dir

    (tmp_path / "version_0" / "checkpoints").mkdir(parents=True)
    (tmp_path / "version_0" / "checkpoints" / "last.ckpt").write_bytes(b"state")
    past = time.time() - 60
    os.utime(tmp_path / "version_0" / "checkpoints" / "last.ckpt", (past, past))
    (tmp_path / "version_1" / "checkpoints").mkdir(parents=True)  # newer, empty: a run that failed early
    (tmp_path / "version_2").mkdir()
    (tmp_path / "version_2" / ".lock").write_text("process 1\n")
    (tmp_path / "version_2" / "config.yaml").write_text("trainer: {}\n")
    assert choose_run_dir(tmp_path, "last") == tmp_path / "version_0"
