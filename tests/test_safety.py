"""Issue 13: outputs never land on inputs, settings and weights are finite, checkpoints are
checked, and checkpoints never choose code. Each case asserts the message and that the user's
files are unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import run_main, save_png
from test_cli import assert_one_message, make_checkpoint, pan_frames
from test_reliability import tree_digest

from salightning.models import RRDBNet, VSRResNet
from salightning.paths import check_output_not_inside

TINY_RRDB = {"num_features": 8, "num_blocks": 1, "growth_channels": 4, "scale": 4}
TINY_VSR = {"num_frames": 3, "frame_features": 4, "num_features": 8, "num_blocks": 1, "scale": 4}


@pytest.fixture(scope="module")
def image_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "rrdb.ckpt"
    return make_checkpoint(path, RRDBNet(**TINY_RRDB), "salightning.models.RRDBNet", TINY_RRDB)


@pytest.fixture(scope="module")
def video_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "vsr.ckpt"
    return make_checkpoint(path, VSRResNet(**TINY_VSR), "salightning.models.VSRResNet", TINY_VSR)


@pytest.fixture()
def clip(tmp_path, photos) -> Path:
    """A 4-frame clip (a pan over a real photo) as a frame folder ``clip/``."""
    for t, frame in enumerate(pan_frames(photos[0], 4, 16, 24)):
        save_png(frame, tmp_path / "clip" / f"frame_{t:04d}.png")
    return tmp_path / "clip"


# -------------------------------------------------------------------- outputs never on inputs


def test_check_output_not_inside_resolves_dotdot_symlinks_and_cwd(tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(data)
    monkeypatch.chdir(data / "sub")
    for output in ["..", ".", tmp_path / "link" / "new", tmp_path / "data" / "sub" / ".." / "x"]:
        with pytest.raises(ValueError, match="--out") as err:
            check_output_not_inside([data], output, "--out")
        assert str(data) in str(err.value)
    assert check_output_not_inside([data], tmp_path / "elsewhere", "--out") == tmp_path / "elsewhere"


def test_predict_refuses_the_parent_of_the_output_as_frame_folder_input(video_ckpt, clip, capsys, monkeypatch):
    """`cd clip/sr && salightning predict --input .. --output .` once overwrote the input frames."""
    (clip / "sr").mkdir()
    monkeypatch.chdir(clip / "sr")
    before = tree_digest(clip)
    code, _, err = run_main(["predict", "--ckpt_path", video_ckpt, "--input", "..", "--output", "."], capsys)
    assert_one_message(code, err, "--output", str(clip), "inputs are never overwritten")
    assert tree_digest(clip) == before


def test_predict_refuses_the_folder_that_holds_the_frame_folder(video_ckpt, clip, capsys):
    # output/<clip name>/ would be the clip itself
    before = tree_digest(clip)
    code, _, err = run_main(["predict", "--ckpt_path", video_ckpt, "--input", clip, "--output", clip.parent], capsys)
    assert_one_message(code, err, "--output", str(clip))
    assert tree_digest(clip) == before


def test_predict_refuses_a_symlink_to_the_input_folder(image_ckpt, clip, tmp_path, capsys):
    (tmp_path / "alias").symlink_to(clip)
    before = tree_digest(clip)
    code, _, err = run_main(["predict", "--ckpt_path", image_ckpt, "--input", clip, "--output", tmp_path / "alias" / "sr"], capsys)
    assert_one_message(code, err, "--output", "alias")
    assert tree_digest(clip) == before


def test_predict_still_writes_next_to_the_input(image_ckpt, clip, tmp_path, capsys):
    code, _, err = run_main(["predict", "--ckpt_path", image_ckpt, "--input", clip, "--output", tmp_path / "sr"], capsys)
    assert code == 0, err
    assert len(list((tmp_path / "sr").glob("*.png"))) == 4


def test_evaluate_refuses_an_output_inside_a_test_set(image_ckpt, clip, capsys):
    before = tree_digest(clip)
    argv = ["test", "--ckpt_path", image_ckpt, "--test_sets", f"clip={clip}", "--output", clip, "--lpips", "none"]
    code, _, err = run_main(argv, capsys)
    assert_one_message(code, err, "--output", str(clip))
    assert tree_digest(clip) == before
