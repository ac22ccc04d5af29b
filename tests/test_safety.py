"""Issue 13: outputs never land on inputs, settings and weights are finite, checkpoints are
checked, and checkpoints never choose code. Each case asserts the message and that the user's
files are unchanged."""

from __future__ import annotations

import errno
import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    assert_one_message,
    make_checkpoint,
    make_module,
    make_project,
    make_trainer,
    pan_frames,
    run_main,
    save_png,
    tiny_config,
    tree_digest,
    write_config,
)

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
    argv = ["evaluate", "--ckpt_path", image_ckpt, "--test_sets", f"clip={clip}", "--output", clip, "--lpips", "none"]
    code, _, err = run_main(argv, capsys)
    assert_one_message(code, err, "--output", str(clip))
    assert tree_digest(clip) == before


# -------------------------------------------------------------------- finite weights, checksums


def _lightning_style(generator: torch.nn.Module) -> dict:
    """A checkpoint as Lightning hands it to the checkpoint IO: weights and an Adam state."""
    opt = torch.optim.Adam(generator.parameters(), lr=1e-3)
    generator(torch.rand(1, 3, 8, 8)).mean().backward()
    opt.step()
    return {
        "epoch": 0,
        "state_dict": {f"generator.{k}": v.clone() for k, v in generator.state_dict().items()},
        "optimizer_states": [opt.state_dict()],
        "hyper_parameters": {"generator": {"class_path": "salightning.models.RRDBNet", "init_args": dict(TINY_RRDB)}},
    }


@pytest.fixture()
def saved(tmp_path) -> tuple[Path, dict]:
    """``last.ckpt`` written by SafeCheckpointIO, and the checkpoint it holds."""
    from salightning.checkpoint_io import SafeCheckpointIO

    torch.manual_seed(0)
    checkpoint = _lightning_style(RRDBNet(**TINY_RRDB))
    path = tmp_path / "run" / "last.ckpt"
    SafeCheckpointIO().save_checkpoint(checkpoint, path)
    return path, checkpoint


@pytest.mark.parametrize(
    ("where", "key"),
    [("weights", "state_dict.generator.conv_first.weight"), ("adam", "optimizer_states[0].state.0.exp_avg_sq")],
)
def test_a_non_finite_state_is_never_written_and_the_last_good_file_stays(saved, where, key):
    from salightning.checkpoint_io import SafeCheckpointIO
    from salightning.checkpoints import NonFiniteCheckpointError

    path, checkpoint = saved
    before = tree_digest(path.parent)
    if where == "weights":
        checkpoint["state_dict"]["generator.conv_first.weight"][0, 0, 0, 0] = float("nan")
    else:
        checkpoint["optimizer_states"][0]["state"][0]["exp_avg_sq"].fill_(float("inf"))
    with pytest.raises(NonFiniteCheckpointError, match="was not written") as err:
        SafeCheckpointIO().save_checkpoint(checkpoint, path)
    assert str(path) in str(err.value) and key in str(err.value)
    assert tree_digest(path.parent) == before


def test_training_diverged_is_one_line_with_status_2(monkeypatch, capsys):
    import salightning.cli
    from salightning.training import TrainingDiverged

    def diverge(argv):
        raise TrainingDiverged("20 non-finite losses in a row at batch 7")

    monkeypatch.setattr(salightning.cli, "_check_config_files", diverge)
    code, _, err = run_main(["fit", "--config", "any.yaml"], capsys)
    assert_one_message(code, err, "non-finite losses")


def _flip_64_bytes_inside(path: Path, tensor: torch.Tensor) -> None:
    """Invert 64 bytes in the middle of ``tensor``'s payload in the file ``path``."""
    data = bytearray(path.read_bytes())
    payload = tensor.contiguous().view(torch.uint8).numpy().tobytes()
    start = data.find(payload)
    assert start >= 0 and len(payload) > 128
    middle = start + len(payload) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))


def test_checkpoints_carry_a_checksum_and_64_flipped_bytes_are_refused(saved, tmp_path, capsys):
    from salightning.checkpoints import CHECKSUM_KEY, load_checkpoint_file

    path, checkpoint = saved
    assert len(load_checkpoint_file(path)[CHECKSUM_KEY]) == 64
    _flip_64_bytes_inside(path, checkpoint["state_dict"]["generator.body.0.rdb1.conv1.weight"])
    with pytest.raises(ValueError, match="SHA-256") as err:
        load_checkpoint_file(path)
    assert str(path) in str(err.value)
    code, _, err_text = run_main(["predict", "--ckpt_path", path, "--input", path.parent, "--output", tmp_path / "o"], capsys)
    assert_one_message(code, err_text, str(path), "corrupt")
    assert not (tmp_path / "o").exists()


def test_a_checkpoint_without_checksum_loads_with_a_note(image_ckpt, caplog):
    from salightning.checkpoints import load_checkpoint_file

    with caplog.at_level("WARNING", logger="salightning.checkpoints"):
        assert "state_dict" in load_checkpoint_file(image_ckpt)
    assert [r.getMessage() for r in caplog.records if "no content checksum" in r.getMessage() and str(image_ckpt) in r.getMessage()]


def test_exports_carry_a_checksum_verified_on_load(saved, tmp_path, capsys):
    from salightning.checkpoints import load_pretrained

    path, _ = saved
    out = tmp_path / "gen.pth"
    code, _, err = run_main(["export", "--ckpt_path", path, "--output", out], capsys)
    assert code == 0, err
    load_pretrained(RRDBNet(**TINY_RRDB), out)
    _flip_64_bytes_inside(out, torch.load(out, weights_only=True)["body.0.rdb1.conv1.weight"])
    with pytest.raises(ValueError, match="SHA-256") as err_info:
        load_pretrained(RRDBNet(**TINY_RRDB), out)
    assert str(out) in str(err_info.value)


# -------------------------------------------------------------------- checkpoints never choose code

USER_MODULE = '''
import errno
import io
import os
import sys
from pathlib import Path

from salightning.models import RRDBNet

Path(__file__).with_name("imported.marker").write_text("module code ran")


class UserNet(RRDBNet):
    """A user's own generator."""
'''


@pytest.fixture()
def user_module_ckpt(tmp_path, monkeypatch) -> Path:
    """A checkpoint whose generator is ``user_gen.UserNet``, a module next to it (on sys.path, as
    the cwd is under ``python -m``) whose import leaves ``imported.marker``."""
    (tmp_path / "user_gen.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "user_gen", raising=False)
    torch.manual_seed(0)
    return make_checkpoint(tmp_path / "user.ckpt", RRDBNet(**TINY_RRDB), "user_gen.UserNet", TINY_RRDB)


@pytest.mark.parametrize("command", ["predict", "export", "test"])
def test_a_checkpoint_cannot_import_a_module_that_is_not_trusted(user_module_ckpt, clip, tmp_path, command, capsys):
    argv = {
        "predict": ["predict", "--ckpt_path", user_module_ckpt, "--input", clip, "--output", tmp_path / "o"],
        "export": ["export", "--ckpt_path", user_module_ckpt, "--output", tmp_path / "o.pth"],
        "test": ["evaluate", "--ckpt_path", user_module_ckpt, "--test_sets", f"clip={clip}", "--output", tmp_path / "o", "--lpips", "none"],
    }[command]
    before = tree_digest(clip, user_module_ckpt)
    code, _, err = run_main(argv, capsys)
    assert_one_message(code, err, "user_gen.UserNet", "--trust_module user_gen")
    assert not (tmp_path / "imported.marker").exists()
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.pth").exists()
    assert tree_digest(clip, user_module_ckpt) == before


def test_a_trusted_module_is_imported(user_module_ckpt, clip, tmp_path, capsys):
    argv = ["predict", "--ckpt_path", user_module_ckpt, "--input", clip, "--output", tmp_path / "o", "--trust_module", "user_gen"]
    code, _, err = run_main(argv, capsys)
    assert code == 0, err
    assert (tmp_path / "imported.marker").exists() and len(list((tmp_path / "o").glob("*.png"))) == 4


def test_an_untrusted_class_nested_in_the_generator_config_is_refused(tmp_path):
    from salightning.checkpoints import check_trusted_classes

    config = {"class_path": "salightning.models.RRDBNet", "init_args": {"act": {"class_path": "os.system"}}}
    with pytest.raises(ValueError, match=r"'os.system'.*--trust_module os"):
        check_trusted_classes(config, [], "checkpoint 'x.ckpt'")
    check_trusted_classes(config, ["os"], "checkpoint 'x.ckpt'")


def test_a_missing_generator_module_is_one_named_error(tmp_path, clip, capsys):
    torch.manual_seed(0)
    ckpt = make_checkpoint(tmp_path / "gone.ckpt", RRDBNet(**TINY_RRDB), "gone_module.GoneNet", TINY_RRDB)
    argv = ["predict", "--ckpt_path", ckpt, "--input", clip, "--output", tmp_path / "o", "--trust_module", "gone_module"]
    code, _, err = run_main(argv, capsys)
    assert_one_message(code, err, str(ckpt), "gone_module.GoneNet")


def test_fit_resuming_a_checkpoint_cannot_import_a_module_that_the_config_does_not_name(user_module_ckpt, tmp_path, photos, capsys):
    make_project(tmp_path / "user", photos)
    config = write_config(tmp_path / "user" / "config.yaml", tiny_config(tmp_path / "user", max_epochs=1))
    ckpt = torch.load(user_module_ckpt, weights_only=True)
    ckpt["hyper_parameters"] = {**tiny_config(tmp_path / "user")["model"], "generator": ckpt["hyper_parameters"]["generator"]}
    torch.save(ckpt, user_module_ckpt)
    before = tree_digest(tmp_path / "user", user_module_ckpt)
    code, _, err = run_main(["fit", "--config", config, "--ckpt_path", user_module_ckpt], capsys)
    assert_one_message(code, err, "user_gen.UserNet", "naming that class in your config")
    assert not (tmp_path / "imported.marker").exists()
    assert tree_digest(tmp_path / "user", user_module_ckpt) == before


# -------------------------------------------------------------------- disk errors outside fit


class FullDisk(io.FileIO):
    """A file on a disk that is full after 1 kB: ENOSPC, as ``write(2)`` reports it."""

    def write(self, data) -> int:
        if self.tell() + len(data) > 1024:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_export_to_a_full_disk_names_the_file_and_leaves_nothing(image_ckpt, tmp_path, monkeypatch, capsys):
    from salightning import checkpoints

    monkeypatch.setattr(checkpoints, "open", lambda path, mode: FullDisk(path, mode), raising=False)
    out = tmp_path / "exports" / "gen.pth"
    code, _, err = run_main(["export", "--ckpt_path", image_ckpt, "--output", out], capsys)
    assert_one_message(code, err, str(out), "No space left on device", "ENOSPC")
    assert not any(out.parent.iterdir())


def _full_disk_after(count: int):
    """A ``PIL.Image.Image.save`` (how predict writes PNGs) that writes ``count`` files, then half
    a file and ENOSPC."""
    from PIL import Image

    real_save = Image.Image.save
    calls = {"n": 0}

    def save(self, fp, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > count:
            Path(fp).write_bytes(b"\x89PNG\r\n\x1a\n")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, fp, *args, **kwargs)

    return save


@pytest.mark.parametrize("ckpt", ["image_ckpt", "video_ckpt"])
def test_predict_to_a_full_disk_names_the_file_and_leaves_nothing(ckpt, clip, tmp_path, monkeypatch, capsys, request):
    from PIL import Image

    monkeypatch.setattr(Image.Image, "save", _full_disk_after(2))
    before = tree_digest(clip)
    out = tmp_path / "results" / "sr"
    code, _, err = run_main(["predict", "--ckpt_path", request.getfixturevalue(ckpt), "--input", clip, "--output", out], capsys)
    assert_one_message(code, err, "frame_0002.png", "ENOSPC")
    assert not (tmp_path / "results").exists()
    assert tree_digest(clip) == before


def test_test_on_a_read_only_disk_names_the_file_and_leaves_no_empty_folder(image_ckpt, tmp_path, photos, monkeypatch, capsys):
    for i, photo in enumerate(photos[:2]):
        save_png(photo[:, 100:164, 100:164], tmp_path / "set" / f"hr{i}.png")
    real_write_text = Path.write_text

    def write_text(self, *args, **kwargs):
        if self.name == "results.csv":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    out = tmp_path / "evaluation"
    argv = ["evaluate", "--ckpt_path", image_ckpt, "--test_sets", f"set={tmp_path / 'set'}", "--output", out, "--lpips", "none"]
    code, _, err = run_main(argv, capsys)
    assert_one_message(code, err, str(out / "results.csv"), "EROFS")
    assert not out.exists()


# -------------------------------------------------------------------- decoding


def _photo_uint8(photos, height: int = 48, width: int = 64):
    import numpy as np

    return (photos[1][:, 100 : 100 + height, 150 : 150 + width].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def test_exif_orientation_is_applied_as_viewers_show_it(photos, tmp_path):
    from PIL import Image, ImageOps

    from salightning.data.io import probe_image, read_image

    path = tmp_path / "upright.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    Image.fromarray(_photo_uint8(photos)).save(path, exif=exif, quality=95)
    with Image.open(path) as im:
        shown = torch.from_numpy(np.asarray(ImageOps.exif_transpose(im)).copy()).permute(2, 0, 1).float() / 255
    image = read_image(path)
    assert image.shape == (3, 64, 48) and torch.equal(image, shown)
    info = probe_image(path)
    assert (info.height, info.width) == (64, 48)


def test_a_16_bit_rgb_tiff_keeps_16_bits(photos, tmp_path):
    import tifffile

    from salightning.data.io import read_image

    # a real photo resampled (bicubic), so its levels are finer than 8 bits
    smooth = torch.nn.functional.interpolate(photos[1][None, :, 100:132, 150:192], scale_factor=1.5, mode="bicubic")[0].clamp(0, 1)
    levels = (smooth.permute(1, 2, 0).numpy() * 65535).round().astype(np.uint16)
    tifffile.imwrite(tmp_path / "deep.tif", levels, photometric="rgb")
    image = read_image(tmp_path / "deep.tif")
    assert torch.equal(image, torch.from_numpy(levels.astype(np.float32) / 65535).permute(2, 0, 1))
    assert not torch.equal(image, (image * 255).round() / 255)  # more than 8 bits survived


def test_a_32_bit_integer_tiff_is_refused_by_name(photos, tmp_path):
    import tifffile

    from salightning.data.io import read_image

    path = tmp_path / "wide.tif"
    tifffile.imwrite(path, _photo_uint8(photos)[..., 0].astype(np.int32) * 70000)
    before = tree_digest(tmp_path)
    with pytest.raises(ValueError, match="32-bit") as err:
        read_image(path)
    assert str(path) in str(err.value)
    assert tree_digest(tmp_path) == before


def test_an_animated_gif_is_refused_by_name(photos, tmp_path):
    from PIL import Image

    from salightning.data.io import read_image

    frames = [Image.fromarray(_photo_uint8(photos)), Image.fromarray(_photo_uint8(photos)[::-1].copy())]
    path = tmp_path / "pan.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.raises(ValueError, match=r"animated image \(2 frames\)") as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_an_animated_gif_given_as_a_clip_is_read_frame_by_frame(photos, tmp_path):
    """As video input (a clip), a GIF gives every frame, exactly as Pillow composes them."""
    import numpy as np
    from PIL import Image, ImageSequence

    from salightning.data import VideoFile

    photo = _photo_uint8(photos)
    path = tmp_path / "pan.gif"
    frames = [Image.fromarray(np.roll(photo, 3 * t, axis=1)) for t in range(6)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40)
    clip = VideoFile(path)
    assert len(clip) == 6
    got = (clip.read(list(range(6))) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    with Image.open(path) as gif:
        want = np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)])
    np.testing.assert_array_equal(got, want)
    assert len({f.tobytes() for f in got}) == 6  # six distinct frames, not one repeated


def test_a_run_whose_weights_turn_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path, patch_loaders):
    """The issue's run: lr_gamma NaN at a milestone (forced past the settings check) makes every
    weight NaN with finite gradients; epoch 1's last.ckpt is refused, epoch 0's stays."""
    import pytorch_lightning as pl

    from salightning.checkpoint_io import SafeCheckpointIO
    from salightning.checkpoints import NonFiniteCheckpointError, load_checkpoint_file

    train, _ = patch_loaders
    folder = tmp_path / "ck"
    module = make_module(stage=2, ema_decay=0.9, lr_milestones=[len(train) + 1])
    module.lr_gamma = float("nan")
    trainer = make_trainer(
        tmp_path, max_epochs=2, limit_val_batches=0, enable_checkpointing=True, plugins=[SafeCheckpointIO()],
        callbacks=[pl.callbacks.ModelCheckpoint(dirpath=folder, save_last=True, every_n_epochs=1)],
    )
    digests: dict[str, dict] = {}

    class Snapshot(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                digests["epoch0"] = tree_digest(folder)

    trainer.callbacks.append(Snapshot())
    with pytest.raises(NonFiniteCheckpointError, match="was not written") as err:
        trainer.fit(module, train)
    assert str(folder) in str(err.value) and "state_dict." in str(err.value)
    assert tree_digest(folder) == digests["epoch0"]
    last = load_checkpoint_file(folder / "last.ckpt")
    assert last["epoch"] == 0 and all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def test_a_symlink_loop_as_input_is_named_as_one(image_ckpt, tmp_path, capsys):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    code, _, err = run_main(["predict", "--ckpt_path", image_ckpt, "--input", tmp_path / "a", "--output", tmp_path / "o"], capsys)
    assert_one_message(code, err, "--input", str(tmp_path / "a"), "symlink loop")
    assert not (tmp_path / "o").exists()
