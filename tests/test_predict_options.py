"""Inference options of ``salightning predict``: --precision, --device, --batch_size, --devices,
--suffix, --overwrite, --alpha, --progress; grey and alpha kept."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_in_group, run_main, save_png

from salightning.metrics import psnr
from salightning.models import RRDBNet
from salightning.checkpoints import load_pretrained
from salightning.predict import MEMMAP_MIB, RankSplit, predict_path

SHIPPED_STAGE1 = Path(__file__).resolve().parents[1] / "salightning" / "assets" / "quickstart_psnr_x4.pth"
SCRIPT = Path(sys.executable).with_name("salightning")
GENERATOR_ARGS = ["--generator", "salightning.models.RRDBNet", "--generator_init_args", "{num_features: 32, num_blocks: 2, growth_channels: 16, scale: 4}"]


@pytest.fixture(scope="module")
def shipped() -> RRDBNet:
    return load_pretrained(RRDBNet(num_features=32, num_blocks=2, growth_channels=16, scale=4), SHIPPED_STAGE1).eval()


def _read(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1)[None].float() / 255


def test_bf16_on_the_cpu_runs_in_bf16_and_stays_close_to_fp32(shipped, photos, tmp_path):
    save_png(photos[2][:, 100:164, 150:230], tmp_path / "in" / "coffee.png")
    (fp32,) = predict_path(shipped, tmp_path / "in" / "coffee.png", tmp_path / "fp32", tile=48, overlap=16)
    seen = []
    bf16 = load_pretrained(RRDBNet(num_features=32, num_blocks=2, growth_channels=16, scale=4), SHIPPED_STAGE1).eval().to(torch.bfloat16)
    bf16.conv_first.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    (half,) = predict_path(bf16, tmp_path / "in" / "coffee.png", tmp_path / "bf16", tile=48, overlap=16)
    assert seen and set(seen) == {torch.bfloat16}
    a, b = _read(fp32), _read(half)
    assert not torch.equal(a, b)  # it did run in bf16
    assert float(psnr(a, b)) >= 35.0


@pytest.mark.parametrize(
    "args, names",
    [
        (["--precision", "fp16", "--device", "cpu"], ["--precision fp16 needs a CUDA device", "--device cpu"]),
        (["--device", "tpu"], ["--device must be cpu, cuda, cuda:N or auto; got --device=tpu"]),
        (["--device", "cpu:1"], ["--device=cpu:1"]),
        (["--device", "cuda:64"], ["--device cuda:64"]),
        (["--tile", "16", "--tile_overlap", "32"], ["--tile=16, --tile_overlap=32"]),
        (["--tile_overlap", "15"], ["--tile_overlap must be even", "--tile_overlap=15"]),
        (["--batch_size", "0"], ["--batch_size must be >= 1; got --batch_size=0"]),
        (["--devices", "0"], ["--devices must be >= 1; got --devices=0"]),
        (["--devices", "2", "--device", "cuda:0"], ["--device"]),
        (["--crf", "80"], ["--crf must be in [0, 63]"]),
        (["--video_codec", "no_such_codec"], ["--video_codec no_such_codec"]),
    ],
)
def test_bad_options_are_named_before_any_work(args, names, tmp_path, capsys):
    """The checkpoint does not exist: an error about the option proves nothing was read first."""
    if torch.cuda.is_available() and any(a.startswith("cuda") for a in args):
        pytest.skip("needs a machine without CUDA")
    save_png(torch.full((3, 8, 8), 0.5), tmp_path / "in" / "x.png")
    argv = ["predict", "--ckpt_path", tmp_path / "missing.ckpt", "--input", tmp_path / "in", "--output", tmp_path / "out", *args]
    code, _, err = run_main(argv, capsys)
    assert code == 2, err
    assert "Traceback" not in err and err.count("error:") == 1 and len(err.strip().splitlines()) == 1, err
    for name in names:
        assert name in err, (name, err)
    assert "missing.ckpt" not in err
    assert not (tmp_path / "out").exists()


def test_batch_size_batches_equal_sizes_only_and_changes_no_pixel(shipped, photos, tmp_path):
    sizes = [(40, 48), (40, 48), (32, 40), (40, 48), (40, 48), (40, 48)]
    for i, (h, w) in enumerate(sizes):
        save_png(photos[i % len(photos)][:, 60 : 60 + h, 80 : 80 + w], tmp_path / "in" / f"img{i}.png")
    seen: list[tuple[int, ...]] = []
    handle = shipped.conv_first.register_forward_hook(lambda module, args, output: seen.append(tuple(args[0].shape)))
    try:
        one = predict_path(shipped, tmp_path / "in", tmp_path / "one", tile=0)
        seen.clear()
        many = predict_path(shipped, tmp_path / "in", tmp_path / "many", tile=0, batch_size=2)
    finally:
        handle.remove()
    # runs of equal sizes in order: 2 | 1 (other size) | 2 + 1
    assert [s[0] for s in seen] == [2, 1, 2, 1]
    assert [s[-2:] for s in seen] == [(40, 48), (32, 40), (40, 48), (40, 48)]
    assert [p.name for p in one] == [p.name for p in many] and len(one) == 6
    for a, b in zip(one, many):
        diff = np.abs(np.asarray(Image.open(a)).astype(int) - np.asarray(Image.open(b)).astype(int))
        assert diff.max() <= 1  # batched convolutions may round differently by one level at most


def test_rank_split_gives_every_item_to_exactly_one_rank():
    for length in (0, 1, 5, 6):
        shares = [list(RankSplit(length, rank, 3)) for rank in range(3)]
        assert sorted(i for share in shares for i in share) == list(range(length))
        assert [len(RankSplit(length, rank, 3)) for rank in range(3)] == [len(s) for s in shares]
    with pytest.raises(ValueError, match="rank must be in"):
        RankSplit(4, 3, 3)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_two_cpu_processes_write_every_output_once_and_equal_to_one_device(photos, tmp_path):
    """Lightning's predict loop, DDP over 2 CPU processes (gloo), through the console script."""
    for i in range(5):
        save_png(photos[i][:, 80 : 80 + 24 + 4 * i, 100:136], tmp_path / "in" / f"photo{i}.png")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [SCRIPT, "predict", "--ckpt_path", SHIPPED_STAGE1, *GENERATOR_ARGS, "--input", tmp_path / "in", "--device", "cpu", "--tile", "24", "--tile_overlap", "8"]
    one = run_in_group([*base, "--output", tmp_path / "one"], timeout=180, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_in_group([*base, "--output", tmp_path / "two", "--devices", "2"], timeout=240, env=env, cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    counts = {int(r): int(n) for r, n in re.findall(r"rank (\d): wrote (\d+) file", two.stdout + two.stderr)}
    assert counts == {0: 3, 1: 2}, two.stdout + two.stderr
    assert _digests(tmp_path / "two") == _digests(tmp_path / "one")
    assert len(_digests(tmp_path / "one")) == 5


# --------------------------------------------------------------------------------------------
# Channels, names, progress and existing files (issue 24 item 6, issue 25 item 5)
# --------------------------------------------------------------------------------------------


def _photo_with_alpha(photo: torch.Tensor, height: int, width: int) -> np.ndarray:
    """An (H, W, 4) uint8 crop of a real photo with a soft round alpha mask."""
    rgb = (photo[:, 60 : 60 + height, 80 : 80 + width].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    yy, xx = np.mgrid[:height, :width]
    radius = np.hypot(yy - height / 2, xx - width / 2) / (min(height, width) / 2)
    alpha = (np.clip(1.5 - radius, 0, 1) * 255).round().astype(np.uint8)
    return np.dstack([rgb, alpha])


@pytest.mark.parametrize("memmap_mib", [MEMMAP_MIB, 0], ids=["in-memory", "memory-mapped"])
def test_rgba_keeps_alpha_upscaled_apart_and_the_colour_of_rgb(shipped, photos, tmp_path, memmap_mib):
    from salightning.ops import imresize

    rgba = _photo_with_alpha(photos[1], 24, 32)
    (tmp_path / "rgba").mkdir()
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba" / "cat.png")
    Image.fromarray(rgba[..., :3]).save(tmp_path / "rgb.png")
    (out,) = predict_path(shipped, tmp_path / "rgba" / "cat.png", tmp_path / "out", tile=16, overlap=8, memmap_mib=memmap_mib)
    (rgb_out,) = predict_path(shipped, tmp_path / "rgb.png", tmp_path / "rgb_out", tile=16, overlap=8)
    with Image.open(out) as im:
        assert im.mode == "RGBA" and im.size == (128, 96)
        got = np.asarray(im)
    assert np.array_equal(got[..., :3], np.asarray(Image.open(rgb_out)))  # the colour as without alpha
    alpha = torch.from_numpy(rgba[..., 3].astype(np.float32) / 255)[None, None]
    expected = (imresize(alpha, 4).clamp(0, 1) * 255 + 0.5).floor().to(torch.uint8)[0, 0].numpy()
    assert np.abs(got[..., 3].astype(int) - expected.astype(int)).max() <= 1  # bicubic, tiled or not
    assert got[0, 0, 3] == 0 and got[48, 64, 3] == 255  # transparent corner, opaque centre


def test_alpha_through_the_generator_is_its_grey_output(shipped, photos, tmp_path):
    rgba = _photo_with_alpha(photos[1], 24, 32)
    (tmp_path / "in").mkdir()
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in" / "cat.png")
    Image.fromarray(np.repeat(rgba[..., 3:], 3, axis=2)).save(tmp_path / "mask.png")
    (out,) = predict_path(shipped, tmp_path / "in" / "cat.png", tmp_path / "out", tile=0, alpha="generator")
    (mask,) = predict_path(shipped, tmp_path / "mask.png", tmp_path / "mask_out", tile=0)
    luma = np.asarray(Image.open(mask).convert("L")).astype(int)
    assert np.abs(np.asarray(Image.open(out))[..., 3].astype(int) - luma).max() <= 1


def test_grey_stays_grey_with_and_without_alpha(shipped, photos, tmp_path):
    grey = np.asarray(Image.fromarray(_photo_with_alpha(photos[0], 24, 32)[..., :3]).convert("L"))
    alpha = _photo_with_alpha(photos[0], 24, 32)[..., 3]
    (tmp_path / "in").mkdir()
    Image.fromarray(grey, "L").save(tmp_path / "in" / "grey.png")
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(tmp_path / "in" / "grey_alpha.png")
    Image.fromarray(np.dstack([grey] * 3)).save(tmp_path / "grey_as_rgb.png")
    outputs = predict_path(shipped, tmp_path / "in", tmp_path / "out", tile=16, overlap=8)
    (as_rgb,) = predict_path(shipped, tmp_path / "grey_as_rgb.png", tmp_path / "rgb_out", tile=16, overlap=8)
    modes = {p.name: Image.open(p).mode for p in outputs}
    assert modes == {"grey.png": "L", "grey_alpha.png": "LA"}
    expected = np.asarray(Image.open(as_rgb).convert("L")).astype(int)  # BT.601 luma, as Pillow
    got = np.asarray(Image.open(tmp_path / "out" / "grey.png")).astype(int)
    assert got.shape == (96, 128) and np.abs(got - expected).max() <= 1
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "grey_alpha.png"))[..., 0], got)


def test_suffix_names_the_outputs(shipped, photos, tmp_path, capsys):
    save_png(photos[2][:, 100:124, 150:182], tmp_path / "in" / "coffee.png")
    code, out, err = run_main(["predict", "--ckpt_path", SHIPPED_STAGE1, *GENERATOR_ARGS, "--input", tmp_path / "in", "--output", tmp_path / "out", "--suffix", "_x4", "--device", "cpu"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["coffee_x4.png"]
    code, _, err = run_main(["predict", "--ckpt_path", SHIPPED_STAGE1, *GENERATOR_ARGS, "--input", tmp_path / "in", "--output", tmp_path / "out", "--suffix", "a/b"], capsys)
    assert code == 2 and "--suffix" in err


def test_progress_bars_count_images_and_tiles(shipped, photos, tmp_path, capsys):
    for i in range(2):
        save_png(photos[i][:, 60:100, 80:128], tmp_path / "in" / f"p{i}.png")
    predict_path(shipped, tmp_path / "in", tmp_path / "out", tile=16, overlap=8, progress=True)
    err = capsys.readouterr().err
    assert "2/2" in err and "image/s" in err  # the folder
    assert "tile/s" in err and "40x48" in err  # the tiles of each image
    predict_path(shipped, tmp_path / "in", tmp_path / "quiet", tile=16, overlap=8, progress=False)
    assert "tile" not in capsys.readouterr().err
    predict_path(shipped, tmp_path / "in", tmp_path / "auto", tile=16, overlap=8)  # stderr is no terminal here
    assert "image" not in capsys.readouterr().err


def test_an_existing_output_is_kept_unless_overwrite(shipped, photos, tmp_path, capsys):
    """predict --input d/sub --output d: d/b.png is not an input, and is replaced only with --overwrite."""
    d = tmp_path / "d"
    save_png(photos[0][:, 60:84, 80:112], d / "sub" / "b.png")
    save_png(photos[1][:, 60:84, 80:112], d / "sub" / "c.png")
    save_png(photos[2][:, :8, :8], d / "b.png")
    before = (d / "b.png").read_bytes()
    base = ["predict", "--ckpt_path", SHIPPED_STAGE1, *GENERATOR_ARGS, "--input", d / "sub", "--output", d, "--device", "cpu", "--tile", "0"]
    code, _, err = run_main(base, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert str(d / "b.png") in err and "--overwrite" in err
    assert (d / "b.png").read_bytes() == before and not (d / "c.png").exists()  # refused before any work
    code, _, err = run_main([*base, "--overwrite"], capsys)
    assert code == 0, err
    with Image.open(d / "b.png") as im:
        assert im.size == (128, 96)
    assert (d / "c.png").exists()


def test_overwrite_never_writes_through_a_symlink_onto_an_input(shipped, photos, tmp_path, capsys):
    d = tmp_path / "d"
    save_png(photos[0][:, 60:84, 80:112], d / "sub" / "b.png")
    (d / "b.png").symlink_to(d / "sub" / "b.png")
    before = (d / "sub" / "b.png").read_bytes()
    code, _, err = run_main(["predict", "--ckpt_path", SHIPPED_STAGE1, *GENERATOR_ARGS, "--input", d / "sub", "--output", d, "--overwrite"], capsys)
    assert code == 2 and "is an input" in err, err
    assert (d / "sub" / "b.png").read_bytes() == before


def test_evaluate_keeps_existing_results_unless_overwrite(shipped, photos, tmp_path, capsys):
    from conftest import make_checkpoint

    torch.manual_seed(0)
    init_args = {"num_features": 8, "num_blocks": 1, "growth_channels": 4, "scale": 4}
    ckpt = make_checkpoint(tmp_path / "m.ckpt", RRDBNet(**init_args), "salightning.models.RRDBNet", init_args)
    save_png(photos[0][:, :64, :64], tmp_path / "set" / "a.png")
    out = tmp_path / "ev"
    out.mkdir()
    (out / "results.csv").write_text("an earlier evaluation\n")
    argv = ["evaluate", "--ckpt_path", f"m={ckpt}", "--test_sets", f"s={tmp_path / 'set'}", "--output", out, "--lpips", "none", "--no_bicubic", "--device", "cpu"]
    code, _, err = run_main(argv, capsys)
    assert code == 2 and str(out / "results.csv") in err and "--overwrite" in err, err
    assert (out / "results.csv").read_text() == "an earlier evaluation\n" and not (out / "results.md").exists()
    code, _, err = run_main([*argv, "--overwrite"], capsys)
    assert code == 0, err
    assert (out / "results.csv").read_text().startswith("model,")


def test_clip_outputs_take_the_suffix_refuse_to_replace_frames_and_name_a_dropped_alpha(photos, tmp_path, capsys):
    from conftest import make_checkpoint

    from salightning.models import VSRResNet

    torch.manual_seed(0)
    init_args = {"num_frames": 3, "frame_features": 4, "num_features": 8, "num_blocks": 1, "scale": 2}
    ckpt = make_checkpoint(tmp_path / "vsr.ckpt", VSRResNet(**init_args), "salightning.models.VSRResNet", init_args)
    (tmp_path / "clip").mkdir()
    for t in range(4):
        Image.fromarray(_photo_with_alpha(photos[0][:, t:, :], 16, 24), "RGBA").save(tmp_path / "clip" / f"f{t}.png")
    argv = ["predict", "--ckpt_path", ckpt, "--input", tmp_path / "clip", "--output", tmp_path / "out", "--suffix", "_sr", "--device", "cpu"]
    code, _, err = run_main(argv, capsys)
    assert code == 0, err
    assert "alpha channel" in err and "clip" in err  # said, not silently dropped
    assert sorted(p.name for p in (tmp_path / "out" / "clip_sr").iterdir()) == [f"f{t}.png" for t in range(4)]
    first = (tmp_path / "out" / "clip_sr" / "f0.png").read_bytes()
    (tmp_path / "out" / "clip_sr" / "f0.png").write_bytes(b"the user's edit")
    code, _, err = run_main(argv, capsys)
    assert code == 2 and "f0.png" in err and "--overwrite" in err, err
    assert (tmp_path / "out" / "clip_sr" / "f0.png").read_bytes() == b"the user's edit"
    code, _, err = run_main([*argv, "--overwrite"], capsys)
    assert code == 0, err
    assert (tmp_path / "out" / "clip_sr" / "f0.png").read_bytes() == first
