"""The ``salightning`` command: configs, the quickstart end to end, predict, export, error messages.

In-process calls go through :func:`salightning.cli.main` (what the console script runs); the
``slow`` tests run the real console script in a subprocess.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from conftest import SHIPPED_STAGE1, assert_one_message, make_checkpoint, pan_frames, run_in_group, run_main, save_png

from salightning.cli import main
from salightning.metrics import psnr
from salightning.models import RRDBNet, VSRResNet
from salightning.checkpoints import load_pretrained
from salightning.predict import tiled_forward
from salightning.checkpoints import load_generator

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
QUICKSTART = REPO / "configs" / "quickstart.yaml"
SCRIPT = Path(sys.executable).with_name("salightning")
# The quickstart as shipped, from any folder (its config names the stage-1 weights relative to the repository).
QUICKSTART_ARGS = ["--config", QUICKSTART, "--model.pretrained_generator", SHIPPED_STAGE1]

# Stage 1 of the quickstart (tiny RRDBNet), one short epoch: a real LightningCLI checkpoint.
TINY_FIT = [
    "fit", "--config", REPO / "configs" / "quickstart_psnr.yaml",
    "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--data.init_args.samples_per_epoch", "16", "--data.init_args.num_workers", "0",
    "--data.init_args.eval_patch_size", "64",
    "--model.ema_decay", "0.5",
]


@pytest.fixture(autouse=True)
def _cli_env(monkeypatch, tmp_path):
    # The configs write to runs/... relative to the working folder: keep that in tmp_path.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("SALIGHTNING_CACHE_DIR", str(tmp_path / "cache"))
    # LightningCLI warns when sys.argv has arguments besides the ones it is given (pytest's).
    monkeypatch.setattr(sys, "argv", ["salightning"])


def file_digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def png_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file."""
    with Image.open(path) as im:
        return im.height, im.width


# --------------------------------------------------------------------------------------------
# Shared artefacts
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_fit(tmp_path_factory) -> Path:
    """The best checkpoint of a real in-process ``salightning fit`` (stage 1, one tiny epoch)."""
    tmp = tmp_path_factory.mktemp("tiny_fit")
    mp = pytest.MonkeyPatch()
    mp.chdir(tmp)
    mp.setenv("WANDB_MODE", "disabled")
    mp.setattr(sys, "argv", ["salightning"])
    try:
        main([str(a) for a in TINY_FIT])
    finally:
        mp.undo()
    (best,) = tmp.glob("runs/quickstart_psnr/version_0/checkpoints/best-*.ckpt")
    return best


@pytest.fixture()
def lr_photo_dir(tmp_path, photos) -> Path:
    """Two real LR photos of different (odd) sizes in a folder."""
    folder = tmp_path / "lr_in"
    folder.mkdir()
    save_png(photos[0][:, 150:190, 200:248], folder / "astronaut.png")  # 40x48
    save_png(photos[1][:, 100:133, 150:187], folder / "chelsea.png")  # 33x37
    return folder


@pytest.fixture(scope="module")
def video_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    init_args = {"num_frames": 5, "frame_features": 4, "num_features": 8, "num_blocks": 2, "scale": 4}
    path = tmp_path_factory.mktemp("vsr") / "vsr.ckpt"
    return make_checkpoint(path, VSRResNet(**init_args), "salightning.models.VSRResNet", init_args)


@pytest.fixture(scope="module")
def image_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    init_args = {"num_features": 8, "num_blocks": 1, "growth_channels": 4, "scale": 4}
    path = tmp_path_factory.mktemp("rrdb") / "rrdb.ckpt"
    return make_checkpoint(path, RRDBNet(**init_args), "salightning.models.RRDBNet", init_args)


@pytest.fixture()
def clip_inputs(tmp_path, photos) -> tuple[Path, Path]:
    """The same 7-frame 32x48 clip (a pan over a real photo) as a frame folder and an MP4."""
    from salightning.data.io import write_video

    frames = pan_frames(photos[0], 7, 32, 48)
    folder = tmp_path / "clip"
    folder.mkdir()
    for t, frame in enumerate(frames):
        save_png(frame, folder / f"frame_{t:03d}.png")
    mp4 = tmp_path / "videos" / "clip.mp4"
    mp4.parent.mkdir()
    write_video((frames * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(), mp4)
    return folder, mp4


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_parses_and_prints_a_rerunnable_config(config, capsys, tmp_path):
    code, out, err = run_main(["fit", "--config", config, "--print_config"], capsys)
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert "trainer" in printed
    if "model" in printed and printed["model"].get("generator") is not None:
        assert printed["model"]["generator"]["class_path"].count(".") >= 1
    # What --print_config writes is itself a valid config and prints the same again.
    saved = tmp_path / "printed.yaml"
    saved.write_text(out)
    code, again, err = run_main(["fit", "--config", saved, "--print_config"], capsys)
    assert code == 0, err
    assert yaml.safe_load(again) == printed


def test_help_lists_every_command_and_each_has_its_own_help(capsys):
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0
    assert out.startswith("usage: salightning")
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("    ") and line.split()}
    assert {"fit", "validate", "test", "evaluate", "predict", "export"} <= listed
    for command, option in (("fit", "--config"), ("validate", "--ckpt_path"), ("test", "--ckpt_path"),
                            ("evaluate", "--test_sets"), ("predict", "--tile_overlap"), ("export", "--format")):
        code, out, err = run_main([command, "--help"], capsys)
        assert code == 0, err
        assert out.startswith("usage: salightning") and f" {command} " in out.splitlines()[0] + " ", out[:200]
        assert option in out


def test_an_unknown_command_and_test_without_config_are_named(capsys):
    code, _, err = run_main(["tset"], capsys)
    assert code == 2 and "unknown command 'tset'" in err and "evaluate" in err
    code, _, err = run_main(["test", "--ckpt_path", "a.ckpt"], capsys)
    assert code == 2 and "salightning evaluate" in err and "Traceback" not in err


def test_python_dash_m_help(capsys, monkeypatch):
    # `python -m salightning` is runpy running salightning/__main__.py as __main__; doing that here
    # tests the same path without a fresh interpreter, whose Lightning imports alone took 10-40 s
    monkeypatch.setattr(sys, "argv", ["salightning", "--help"])
    try:
        runpy.run_module("salightning", run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    out = capsys.readouterr().out
    assert "usage: salightning" in out and "fit" in out


# --------------------------------------------------------------------------------------------
# The quickstart, end to end through the console script
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path, photos):
    """The README's first command, at reduced size. It runs in a folder laid out like the
    repository (configs/ and salightning/assets/ linked in), so that the config's relative
    paths resolve as they do there while everything it writes (runs/...) lands in tmp_path."""
    assert SCRIPT.is_file(), f"console script not installed next to {sys.executable}"
    run = tmp_path / "repo"
    (run / "salightning").mkdir(parents=True)
    (run / "configs").symlink_to(REPO / "configs")
    (run / "salightning" / "assets").symlink_to(REPO / "salightning" / "assets")
    env = dict(os.environ, WANDB_MODE="disabled", SALIGHTNING_CACHE_DIR=str(tmp_path / "cache"))
    result = run_in_group(
        [str(SCRIPT), "fit", "--config", "configs/quickstart.yaml", "--trainer.max_epochs", "1",
         "--data.init_args.samples_per_epoch", "80", "--data.init_args.num_workers", "0",
         "--data.init_args.eval_patch_size", "64", "--model.sa_calibration_batches", "1",
         "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1"],
        cwd=run, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    # 10 batches: LastCheckpoint writes once, ModelCheckpoint twice; nothing printed asks nothing of the user
    for noise in ("weights_only", "sync_dist", "TracerWarning", "LeafSpec", "Tip:", "UserWarning", "FutureWarning"):
        assert noise not in result.stdout + result.stderr, (noise, result.stderr[-3000:])
    assert "LightningCLI's args parameter" not in result.stderr  # the console script passes no args twice

    def reported(label: str) -> Path:
        match = re.search(rf"^\s*{label}\s*:\s*(.+?)(?: \(.*\))?$", result.stdout, re.MULTILINE)
        assert match, f"no {label!r} line in:\n{result.stdout}"
        path = Path(match.group(1))
        assert path.exists() and path.is_relative_to(run.resolve() / "runs" / "quickstart"), path
        return path

    best = reported("best checkpoint")
    assert reported("last checkpoint").suffix == ".ckpt"
    samples = reported("sample images")
    metrics = reported("metrics \\(CSV\\)")
    assert best.suffix == ".ckpt"
    assert list(samples.glob("*.png"))
    header = metrics.read_text().splitlines()[0].split(",")
    assert {"val/psnr", "val/ssim", "train/loss", "train/sa_beta"} <= set(header)

    # The checkpoint it wrote works with the console script's predict.
    inputs = tmp_path / "in"
    inputs.mkdir()
    save_png(photos[2][:, 100:132, 150:190], inputs / "coffee.png")
    before = file_digests(inputs)
    result = run_in_group(
        [str(SCRIPT), "predict", "--ckpt_path", best, "--input", inputs / "coffee.png", "--output", tmp_path / "out"],
        cwd=tmp_path, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert png_size(tmp_path / "out" / "coffee.png") == (128, 160)
    assert file_digests(inputs) == before


# --------------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------------


def test_predict_an_image_with_a_fit_checkpoint(tiny_fit, lr_photo_dir, tmp_path, capsys):
    before = file_digests(lr_photo_dir)
    out = tmp_path / "out"
    code, stdout, err = run_main(["predict", "--ckpt_path", tiny_fit, "--input", lr_photo_dir / "astronaut.png", "--output", out], capsys)
    assert code == 0, err
    assert "wrote 1 file" in stdout
    assert [p.name for p in out.iterdir()] == ["astronaut.png"]
    assert png_size(out / "astronaut.png") == (160, 192)
    assert file_digests(lr_photo_dir) == before

    # Same result as the generator on the decoded image (8-bit rounding apart).
    from salightning.data.io import read_image

    generator = load_generator(tiny_fit)
    with torch.no_grad():
        expected = generator(read_image(lr_photo_dir / "astronaut.png")[None]).clamp(0, 1)
    written = read_image(out / "astronaut.png")[None]
    assert float(psnr(written, expected)) > 45


def test_predict_a_folder_tiled(tiny_fit, lr_photo_dir, tmp_path, capsys):
    before = file_digests(lr_photo_dir)
    out = tmp_path / "out"
    code, stdout, err = run_main(
        ["predict", "--ckpt_path", tiny_fit, "--input", lr_photo_dir, "--output", out, "--tile", "24", "--tile_overlap", "8"], capsys
    )
    assert code == 0, err
    assert "wrote 2 file" in stdout
    assert png_size(out / "astronaut.png") == (160, 192)
    assert png_size(out / "chelsea.png") == (132, 148)
    assert file_digests(lr_photo_dir) == before


def test_predict_a_clip_with_a_video_generator(video_checkpoint, clip_inputs, tmp_path, capsys):
    from salightning.data.io import VideoFile

    folder, mp4 = clip_inputs
    before = (file_digests(folder), file_digests(mp4.parent))

    code, stdout, err = run_main(["predict", "--ckpt_path", video_checkpoint, "--input", folder, "--output", tmp_path / "out"], capsys)
    assert code == 0, err
    frames = sorted((tmp_path / "out" / "clip").glob("*.png"))
    assert [p.name for p in frames] == [f"frame_{t:03d}.png" for t in range(7)]
    assert all(png_size(p) == (128, 192) for p in frames)

    code, stdout, err = run_main(["predict", "--ckpt_path", video_checkpoint, "--input", mp4, "--output", tmp_path / "out_mp4"], capsys)
    assert code == 0, err
    assert len(list((tmp_path / "out_mp4" / "clip").glob("*.png"))) == 7
    video = VideoFile(tmp_path / "out_mp4" / "clip_sr.mp4")
    assert (len(video), video.height, video.width) == (7, 128, 192)
    assert (file_digests(folder), file_digests(mp4.parent)) == before


def test_video_generator_sees_its_neighbour_frames(video_checkpoint, clip_inputs):
    """Each output frame comes from the window t-2..t+2 (mirrored at the ends), upsampled first."""
    from salightning.ops import imresize
    from salightning.data.io import FrameFolder
    from salightning.predict import super_resolve_clip

    folder, _ = clip_inputs
    generator = load_generator(video_checkpoint)
    clip = FrameFolder(folder).read(list(range(7)))
    sr = super_resolve_clip(generator, clip, tile=0)

    def upsampled(window: torch.Tensor) -> torch.Tensor:  # at 8-bit levels, as in training
        return (imresize(window, 4.0).clamp(0, 1) * 255).round()[None] / 255

    with torch.no_grad():
        first = generator(upsampled(clip[[2, 1, 0, 1, 2]])).clamp(0, 1)[0]
        middle = generator(upsampled(clip[1:6])).clamp(0, 1)[0]
    torch.testing.assert_close(sr[0], first)
    torch.testing.assert_close(sr[3], middle)


def test_predict_a_clip_with_an_image_generator(tiny_fit, clip_inputs, tmp_path, capsys):
    folder, mp4 = clip_inputs
    code, _, err = run_main(["predict", "--ckpt_path", tiny_fit, "--input", mp4, "--output", tmp_path / "out"], capsys)
    assert code == 0, err
    assert len(list((tmp_path / "out" / "clip").glob("*.png"))) == 7
    assert (tmp_path / "out" / "clip_sr.mp4").is_file()
    code, _, err = run_main(["predict", "--ckpt_path", tiny_fit, "--input", folder, "--output", tmp_path / "frames_out"], capsys)
    assert code == 0, err
    assert png_size(tmp_path / "frames_out" / "frame_000.png") == (128, 192)


def test_constructed_checkpoints_are_laid_out_like_real_ones(tiny_fit, image_checkpoint):
    real = torch.load(tiny_fit, weights_only=False)
    made = torch.load(image_checkpoint, weights_only=False)
    real_gen, made_gen = real["hyper_parameters"]["generator"], made["hyper_parameters"]["generator"]
    assert real_gen["class_path"] == made_gen["class_path"] == "salightning.models.RRDBNet"
    assert set(made_gen["init_args"]) <= set(real_gen["init_args"])

    def groups(state: dict) -> set[str]:
        return {k.split(".")[0] + (".module" if k.startswith("generator_ema.module.") else "") for k in state}

    assert {"generator", "generator_ema.module"} <= groups(real["state_dict"])
    assert groups(made["state_dict"]) <= groups(real["state_dict"])


def test_predict_uses_the_ema_generator_unless_told(video_checkpoint):
    ckpt = torch.load(video_checkpoint, weights_only=True)
    ema = load_generator(video_checkpoint)
    raw = load_generator(video_checkpoint, use_ema=False)
    torch.testing.assert_close(ema.conv_last.weight, ckpt["state_dict"]["generator_ema.module.conv_last.weight"])
    torch.testing.assert_close(raw.conv_last.weight, ckpt["state_dict"]["generator.conv_last.weight"])
    assert ema.num_frames == 5 and ema.input_upsampled and not ema.training


# --------------------------------------------------------------------------------------------
# Tiled inference matches untiled inference
# --------------------------------------------------------------------------------------------


def _tiny_rrdbnets() -> dict[str, RRDBNet]:
    torch.manual_seed(0)
    trained = load_pretrained(RRDBNet(num_features=32, num_blocks=2, growth_channels=16, scale=4), SHIPPED_STAGE1)
    return {"trained_tiny": trained, "random_tiny": RRDBNet(num_features=16, num_blocks=1, growth_channels=8, scale=4)}


@pytest.fixture(scope="module")
def tiny_rrdbnets() -> dict[str, RRDBNet]:
    return {name: g.eval() for name, g in _tiny_rrdbnets().items()}


@pytest.mark.parametrize("name", ["trained_tiny", "random_tiny"])
@pytest.mark.parametrize("tile, overlap", [(48, 16), (40, 32)])
def test_tiled_matches_untiled(tiny_rrdbnets, photos, name, tile, overlap):
    generator = tiny_rrdbnets[name]
    x = photos[0][:, 100:197, 150:281][None]  # 97x131 LR: several tiles, the last ones shifted
    with torch.no_grad():
        full = generator(x).clamp(0, 1)
        tiled = tiled_forward(generator, x, tile=tile, overlap=overlap).clamp(0, 1)
    assert tiled.shape == full.shape == (1, 3, 388, 524)
    assert float(psnr(tiled, full)) >= 50.0


def test_tiling_without_overlap_shows_seams(tiny_rrdbnets, photos):
    """The check above can fail: without context at the cuts the trained network's output differs."""
    generator = tiny_rrdbnets["trained_tiny"]
    x = photos[0][:, 100:197, 150:281][None]
    with torch.no_grad():
        full = generator(x).clamp(0, 1)
        seams = tiled_forward(generator, x, tile=48, overlap=0).clamp(0, 1)
    assert float(psnr(seams, full)) < 50.0


def test_tiled_video_generator_matches_untiled(video_checkpoint, photos):
    from salightning.ops import imresize

    generator = load_generator(video_checkpoint)
    x = imresize(pan_frames(photos[0], 5, 40, 56), 4.0).clamp(0, 1)[None]  # (1, 5, 3, 160, 224)
    with torch.no_grad():
        full = generator(x).clamp(0, 1)
        tiled = tiled_forward(generator, x, tile=96, overlap=32).clamp(0, 1)
    assert tiled.shape == full.shape == (1, 3, 160, 224)
    assert float(psnr(tiled, full)) >= 50.0


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------


def test_export_writes_plain_weights_and_refuses_to_overwrite(tiny_fit, tmp_path, capsys):
    out = tmp_path / "exported" / "generator.pth"
    code, stdout, err = run_main(["export", "--ckpt_path", tiny_fit, "--output", out], capsys)
    assert code == 0, err
    assert str(out.resolve()) in stdout
    state = torch.load(out, weights_only=True)
    assert not any(k.startswith(("generator.", "generator_ema.")) for k in state)
    model = load_pretrained(RRDBNet(num_features=32, num_blocks=2, growth_channels=16, scale=4), out)
    ckpt = torch.load(tiny_fit, weights_only=False)["state_dict"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ckpt[f"generator_ema.module.{k}"])  # the EMA generator by default
    assert not torch.equal(ckpt["generator_ema.module.conv_last.weight"], ckpt["generator.conv_last.weight"])

    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    code, _, err = run_main(["export", "--ckpt_path", tiny_fit, "--output", out, "--no_ema"], capsys)
    assert code == 2
    assert "exists" in err and str(out) in err and "Traceback" not in err
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest

    raw = tmp_path / "raw.pth"
    code, _, err = run_main(["export", "--ckpt_path", tiny_fit, "--output", raw, "--no_ema"], capsys)
    assert code == 0, err
    torch.testing.assert_close(torch.load(raw, weights_only=True)["conv_last.weight"], ckpt["generator.conv_last.weight"])


# --------------------------------------------------------------------------------------------
# Config errors: one readable message and a non-zero exit
# --------------------------------------------------------------------------------------------


def test_unknown_key(capsys, tmp_path):
    code, _, err = run_main(["fit", *QUICKSTART_ARGS, "--model.nonexistent", "3"], capsys)
    assert_one_message(code, err, "--model.nonexistent")


@pytest.mark.parametrize(
    "args, given, meant",
    [
        (["--trainer.max_epoch", "1"], "--trainer.max_epoch", "--trainer.max_epochs"),  # a prefix is not taken for the option
        (["--trainr.max_epochs=1"], "--trainr.max_epochs", "--trainer.max_epochs"),
        (["--model.adversarial_wieght", "0.1"], "--model.adversarial_wieght", "--model.adversarial_weight"),
        (["--data.init_args.samples_per_epok", "3"], "samples_per_epok", "samples_per_epoch"),
        (["--model.generator.init_args.num_feature", "3"], "num_feature", "num_features"),
    ],
)
def test_an_option_typo_is_one_line_with_the_closest_names(capsys, args, given, meant):
    code, _, err = run_main(["fit", *QUICKSTART_ARGS, *args], capsys)
    assert_one_message(code, err, given, f"did you mean {meant}")
    assert len(err.strip().splitlines()) == 1, err  # not the usage of every option
    assert "usage:" not in err and "NoneType" not in err


@pytest.mark.parametrize("command", [["predict", "--ckpt_path", "a.ckpt", "--input", "in"], ["export", "--ckpt_path", "a.ckpt"]])
def test_a_typo_in_predict_and_export_names_the_option(capsys, command):
    code, _, err = run_main([*command, "--outpt", "out"], capsys)
    assert_one_message(code, err, "--outpt", "did you mean --output")
    assert len(err.strip().splitlines()) == 1, err


def test_a_prefix_of_a_predict_option_is_refused(capsys, tmp_path):
    code, _, err = run_main(["predict", "--ckpt", "a.ckpt", "--input", "in", "--output", "out"], capsys)
    assert_one_message(code, err, "--ckpt", "did you mean --ckpt_path")


@pytest.mark.skipif(
    tuple(int(p) for p in importlib.metadata.version("jsonargparse").split(".")[:2]) < (4, 32),
    reason="jsonargparse < 4.32 does not say which subcommand's parser refused a config key: the error is one line without the closest names",
)
def test_unknown_key_in_a_config_file(capsys, tmp_path):
    config = yaml.safe_load(QUICKSTART.read_text())
    config["model"]["adversarial_wieght"] = 0.01
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    code, _, err = run_main(["fit", "--config", path, "--model.pretrained_generator", SHIPPED_STAGE1], capsys)
    assert_one_message(code, err, "adversarial_wieght", "did you mean model.adversarial_weight")
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("option, value", [("--trainer.max_epochs", "many"), ("--model.adversarial_weight", "strong")])
def test_wrong_type(capsys, tmp_path, option, value):
    code, _, err = run_main(["fit", *QUICKSTART_ARGS, option, value], capsys)
    assert_one_message(code, err, option.lstrip("-"), value)
    assert len(err.strip().splitlines()) == 1 and "NoneType" not in err, err


def test_missing_pretrained_generator(capsys, tmp_path):
    missing = tmp_path / "no_such_weights.pth"
    code, _, err = run_main(["fit", *QUICKSTART_ARGS, "--model.pretrained_generator", missing], capsys)
    assert_one_message(code, err, str(missing))


def test_missing_data_folder(capsys, tmp_path):
    missing = tmp_path / "no_such_folder"
    code, _, err = run_main(["fit", *QUICKSTART_ARGS, "--data.init_args.train_hr", missing], capsys)
    assert_one_message(code, err, "train_hr", str(missing))


def test_scale_mismatch(capsys, tmp_path):
    code, _, err = run_main(["fit", *QUICKSTART_ARGS, "--data.init_args.scale", "2"], capsys)
    assert_one_message(code, err, "scale", "model.generator.scale=4", "data.scale=2")
    assert not list(tmp_path.rglob("*.ckpt"))


def test_predict_missing_checkpoint(capsys, lr_photo_dir, tmp_path):
    missing = tmp_path / "missing.ckpt"
    code, _, err = run_main(["predict", "--ckpt_path", missing, "--input", lr_photo_dir, "--output", tmp_path / "out"], capsys)
    assert_one_message(code, err, str(missing))
    assert not (tmp_path / "out").exists()


def test_predict_not_a_fit_checkpoint(capsys, lr_photo_dir, tmp_path):
    plain = tmp_path / "plain.pth"
    torch.save(RRDBNet(num_features=8, num_blocks=1, growth_channels=4).state_dict(), plain)
    code, _, err = run_main(["predict", "--ckpt_path", plain, "--input", lr_photo_dir, "--output", tmp_path / "out"], capsys)
    assert_one_message(code, err, str(plain), "salightning fit")


def test_predict_refuses_to_write_into_the_input_folder(capsys, image_checkpoint, lr_photo_dir, tmp_path):
    before = file_digests(lr_photo_dir)
    code, _, err = run_main(["predict", "--ckpt_path", image_checkpoint, "--input", lr_photo_dir, "--output", lr_photo_dir], capsys)
    assert_one_message(code, err, "--output")
    code, _, err = run_main(
        ["predict", "--ckpt_path", image_checkpoint, "--input", lr_photo_dir / "chelsea.png", "--output", lr_photo_dir / ".." / lr_photo_dir.name], capsys
    )
    assert_one_message(code, err, "--output")
    assert file_digests(lr_photo_dir) == before


def test_predict_missing_input_and_wrong_input_kind(capsys, video_checkpoint, lr_photo_dir, tmp_path):
    code, _, err = run_main(["predict", "--ckpt_path", video_checkpoint, "--input", tmp_path / "nope.png", "--output", tmp_path / "o"], capsys)
    assert_one_message(code, err, "--input", "nope.png")
    code, _, err = run_main(["predict", "--ckpt_path", video_checkpoint, "--input", lr_photo_dir / "chelsea.png", "--output", tmp_path / "o"], capsys)
    assert_one_message(code, err, "chelsea.png", "5 frames")


def test_predict_odd_overlap(capsys, image_checkpoint, lr_photo_dir, tmp_path):
    code, _, err = run_main(
        ["predict", "--ckpt_path", image_checkpoint, "--input", lr_photo_dir, "--output", tmp_path / "o", "--tile", "32", "--tile_overlap", "7"], capsys
    )
    assert_one_message(code, err, "overlap=7")


def test_predict_refuses_inputs_that_would_share_an_output(capsys, image_checkpoint, lr_photo_dir, tmp_path):
    shutil.copy(lr_photo_dir / "chelsea.png", lr_photo_dir / "chelsea.bmp")
    code, _, err = run_main(["predict", "--ckpt_path", image_checkpoint, "--input", lr_photo_dir, "--output", tmp_path / "o"], capsys)
    assert_one_message(code, err, "chelsea.bmp", "chelsea.png")
    assert not list((tmp_path / "o").glob("*.png"))


def test_the_public_api_imports_from_the_top_lazily():
    code = (
        "import sys, salightning\n"
        "assert 'torch' not in sys.modules, 'import salightning imported torch'\n"
        "for name in salightning.__all__:\n"
        "    assert getattr(salightning, name) is not None, name\n"
        "from salightning import SRGANModule, SAPixelLoss, LocalVariance, Canny, RRDBNet, ImageSRDataModule\n"
        "assert SRGANModule.__module__.startswith('salightning.') and RRDBNet(scale=4).scale == 4\n"
        "try:\n"
        "    salightning.NoSuchThing\n"
        "except AttributeError as err:\n"
        "    assert 'NoSuchThing' in str(err)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )
    result = run_in_group([sys.executable, "-c", code], text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def test_missing_vgg_weights_in_a_shipped_config_is_one_message_with_the_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(["fit", "--config", REPO / "configs" / "sa_esrgan_lv.yaml", "--trainer.accelerator", "cpu"], capsys)
    assert code == 2, err[-2000:]
    assert "PerceptualLoss: The vgg19 ImageNet weights are needed" in err
    assert "--model.perceptual_loss.init_args.weights" in err and "vgg19-dcbb9e9d.pth" in err
    assert "Union subtypes" not in err and "NoneType" not in err and "Traceback" not in err
