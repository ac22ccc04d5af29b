"""Inference options of ``salightning predict``: --precision, --device, --batch_size, --devices."""

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
from salightning.predict import RankSplit, predict_path

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
