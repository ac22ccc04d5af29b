"""Image and video datamodules, file reading, sample data and bad-input errors, on real photos."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from salightning.data import (
    EpochSampler,
    FrameFolder,
    ImageSRDataModule,
    VideoFile,
    VideoSRDataModule,
    dihedral,
    probe_image,
    read_image,
    sample_image_paths,
    sample_video_dir,
)
from salightning.ops import imresize
from salightning.data import benchmark_dataset, benchmark_lr
from salightning.data.samples import SAMPLE_CLIPS, SAMPLE_IMAGES, skimage_data_dir
from salightning.data.transforms import crop_to_scale, reflect_index

SCALE = 4

# -- helpers ---------------------------------------------------------------------------------


def to_u8(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def save_png(x: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_u8(x)).save(path)


def write_mp4(frames: list[np.ndarray], path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10", "g": "4"}  # short GOPs so reads must seek
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def locate(patch: torch.Tensor, full: torch.Tensor, step: int) -> tuple[int, int, int]:
    """(k, top, left) such that dihedral(full[:, top:top+P, left:left+P], k) == patch exactly."""
    size = patch.shape[-1]
    windows = full.unfold(1, size, step).unfold(2, size, step)  # (3, nt, nl, P, P)
    for k in range(8):
        hit = (dihedral(windows, k) == patch[:, None, None]).flatten(3).all(-1).all(0).nonzero()
        if len(hit):
            return k, int(hit[0, 0]) * step, int(hit[0, 1]) * step
    raise AssertionError("patch not found in the image")


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def first_batch(loader):
    return next(iter(loader))


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_dirs(tmp_path_factory, photos):
    """DIV2K layout: HR/0001.png ... (99x121, not multiples of 4) and LR_bicubic/X4/0001x4.png."""
    root = tmp_path_factory.mktemp("images")
    for i, photo in enumerate(photos[:4], start=1):
        hr = photo[:, 30:129, 40:161]
        save_png(hr, root / "HR" / f"{i:04d}.png")
        hr8 = read_image(root / "HR" / f"{i:04d}.png")[:, :96, :120]
        save_png(imresize(hr8, 1 / SCALE), root / "LR_bicubic" / "X4" / f"{i:04d}x4.png")
    save_png(photos[5][:, :64, :64], root / "val" / "GTmod12" / "star.png")
    save_png(imresize(photos[5][:, :64, :64], 0.25), root / "val" / "LRbicx4" / "star.png")
    return root


def _clip_frames(photo: torch.Tensor, n: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    """Real content with a real (if simple) motion: a window moving 2 px down, 3 px right per frame."""
    return [to_u8(photo[:, 10 + 2 * t : 10 + 2 * t + height, 20 + 3 * t : 20 + 3 * t + width]) for t in range(n)]


@pytest.fixture(scope="module")
def clip_dirs(tmp_path_factory, photos):
    """Frame folders (Vid4 layout) train/<clip>/NNNN.png, test/<clip>/, and MP4 files."""
    root = tmp_path_factory.mktemp("clips")
    for i, photo in enumerate(photos[:5]):
        folder = "test" if i == 4 else "train"
        for t, frame in enumerate(_clip_frames(photo, 7)):
            (root / folder / f"clip{i}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(frame).save(root / folder / f"clip{i}" / f"{t:04d}.png")
    (root / "mp4").mkdir()
    for i in (0, 1):
        write_mp4(_clip_frames(photos[i], 7), root / "mp4" / f"clip{i}.mp4")
    return root


@pytest.fixture(scope="module")
def sample_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _no_home_cache(monkeypatch, sample_cache):
    """Sample clips a test builds by default go to a temporary folder, never to ~/.cache."""
    monkeypatch.setenv("SALIGHTNING_CACHE_DIR", str(sample_cache))


# -- reading files ---------------------------------------------------------------------------


def test_read_formats(tmp_path, photos):
    photo = photos[1][:, :40, :50]
    u8 = to_u8(photo)
    Image.fromarray(u8).save(tmp_path / "rgb.png")
    assert torch.equal(read_image(tmp_path / "rgb.png"), torch.from_numpy(u8).permute(2, 0, 1).float() / 255)

    Image.fromarray(u8).save(tmp_path / "photo.jpg", quality=95)
    jpg = read_image(tmp_path / "photo.jpg")
    assert jpg.shape == (3, 40, 50) and (jpg - photo).abs().mean() < 0.03

    Image.fromarray(u8[..., 1]).save(tmp_path / "grey.png")
    grey = read_image(tmp_path / "grey.png")
    assert grey.shape == (3, 40, 50) and torch.equal(grey[0], grey[2])

    rgba = np.concatenate([u8, np.full((40, 50, 1), 128, np.uint8)], axis=-1)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert probe_image(tmp_path / "rgba.png").has_alpha and not probe_image(tmp_path / "rgb.png").has_alpha
    assert torch.equal(read_image(tmp_path / "rgba.png"), read_image(tmp_path / "rgb.png"))

    # 16-bit: every one of the 65536 levels must survive (Pillow alone would keep 8 bits).
    smooth = imresize(photos[1][:, :80, :100], 0.5).clamp(0, 1)  # off the 8-bit grid
    u16 = (smooth.permute(1, 2, 0).double().numpy() * 65535).round().astype(np.uint16)
    with av.open(str(tmp_path / "rgb16.png"), "w", format="image2") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = 50, 40, "rgb48be"
        for packet in stream.encode(av.VideoFrame.from_ndarray(u16, format="rgb48le")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert (np.asarray(u16) % 257 != 0).any()
    rgb16 = read_image(tmp_path / "rgb16.png")
    assert np.array_equal((rgb16.permute(1, 2, 0).double().numpy() * 65535).round().astype(np.uint16), u16)

    Image.fromarray(u16[..., 0]).save(tmp_path / "grey16.png")
    grey16 = read_image(tmp_path / "grey16.png")
    assert np.array_equal((grey16[1].double().numpy() * 65535).round().astype(np.uint16), u16[..., 0])


def _write_png16(path: Path, levels: np.ndarray, colour_type: int) -> None:
    """A 16-bit PNG written from the format's definition (grey 0, RGB 2, grey+alpha 4, RGBA 6)."""
    import struct
    import zlib

    height, width = levels.shape[:2]
    rows = b"".join(b"\x00" + levels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("colour_type, channels", [(0, 1), (2, 3), (4, 2), (6, 4)])
def test_16_bit_png_of_every_colour_type_keeps_16_bits(tmp_path, photos, colour_type, channels):
    smooth = imresize(photos[1][:, :80, :100], 0.5).clamp(0, 1)
    rgb = (smooth.permute(1, 2, 0).double().numpy() * 65535).round().astype(np.uint16)
    alpha = np.full((40, 50, 1), 40000, np.uint16)
    levels = {1: rgb[..., :1], 2: np.concatenate([rgb[..., :1], alpha], -1), 3: rgb, 4: np.concatenate([rgb, alpha], -1)}[channels]
    _write_png16(tmp_path / "deep.png", levels, colour_type)
    image = read_image(tmp_path / "deep.png")
    colour = levels[..., :3] if channels >= 3 else np.repeat(levels[..., :1], 3, axis=-1)
    assert (colour % 257 != 0).any()  # not 8-bit levels in disguise
    assert torch.equal(image, torch.from_numpy(colour.astype(np.float32) / 65535).permute(2, 0, 1))
    assert probe_image(tmp_path / "deep.png").has_alpha == (channels in (2, 4))
    data = (tmp_path / "deep.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot decode image") as err:
        read_image(tmp_path / "cut.png")
    assert str(tmp_path / "cut.png") in str(err.value)


def test_benchmark_lr_is_mod_crop_matlab_bicubic_and_8_bit(photos):
    hr = photos[1][:, 30:129, 40:161]  # 99x121: not multiples of 4
    lr, cropped = benchmark_lr(hr, SCALE)
    assert torch.equal(cropped, hr[:, :96, :120]) and torch.equal(crop_to_scale(hr, SCALE), cropped)
    expected = (imresize(hr[:, :96, :120], 1 / SCALE).clamp(0, 1) * 255).round() / 255
    torch.testing.assert_close(lr, expected, rtol=0, atol=1e-6)
    assert torch.equal(lr * 255, (lr * 255).round())
    with pytest.raises(ValueError, match="at least scale=4"):
        benchmark_lr(hr[:, :3, :40], SCALE)
    with pytest.raises(ValueError, match="scale must be an integer >= 1"):
        crop_to_scale(hr, 0)


def test_benchmark_dataset_equals_the_datamodule_test_split(image_dirs):
    for hr, lr in [(image_dirs / "HR", None), (image_dirs / "HR", image_dirs / "LR_bicubic" / "X4"), (image_dirs / "val", None)]:
        dataset = benchmark_dataset(hr, lr, SCALE)
        dm = ImageSRDataModule(test_hr=str(hr), test_lr=None if lr is None else str(lr), num_workers=0, pin_memory=False)
        dm.setup("test")
        assert len(dataset) == len(dm.datasets["test"]) > 0
        for i in range(len(dataset)):
            mine, theirs = dataset[i], dm.datasets["test"][i]
            assert mine["name"] == theirs["name"] and torch.equal(mine["lr"], theirs["lr"]) and torch.equal(mine["hr"], theirs["hr"])
        if lr is None and hr.name == "HR":
            whole = read_image(hr / f"{dataset[0]['name']}.png")
            expected_lr, expected_hr = benchmark_lr(whole, SCALE)
            assert torch.equal(dataset[0]["lr"], expected_lr) and torch.equal(dataset[0]["hr"], expected_hr)
    assert [p.lr is not None for p in benchmark_dataset(image_dirs / "val", None, SCALE).pairs] == [True]  # LRbicx4


def test_data_docstring_examples_run():
    import doctest
    import importlib

    for name in ("salightning.data.transforms", "salightning.data.sampling"):
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, name


def test_dihedral_group_and_reflection(photos):
    patch = photos[0][:, :16, :16]
    outs = [dihedral(patch, k) for k in range(8)]
    assert torch.equal(outs[0], patch)
    assert len({o.numpy().tobytes() for o in outs}) == 8
    assert [reflect_index(i, 5) for i in range(-2, 7)] == [2, 1, 0, 1, 2, 3, 4, 3, 2]


def test_epoch_sampler_enlarges_and_reshuffles():
    sampler = EpochSampler(num_items=4, length=10, seed=1)
    first = list(sampler)
    second = list(sampler)
    assert len(first) == 10 and sorted(i for i, _ in first[:8]) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert first != second
    sampler.set_epoch(0)
    assert list(sampler) == first


# -- image datamodule ------------------------------------------------------------------------


def test_image_on_the_fly_batches_match_imresize(image_dirs):
    dm = ImageSRDataModule(
        train_hr=str(image_dirs / "HR"), val_hr=str(image_dirs / "HR"), patch_size=32,
        batch_size=8, num_workers=0, samples_per_epoch=16, quantize_lr=False, seed=0,
    )
    dm.setup("fit")
    ks = set()
    for batch in dm.train_dataloader():
        assert batch["lr"].shape == (8, 3, 8, 8) and batch["hr"].shape == (8, 3, 32, 32)
        assert 0 <= batch["lr"].min() and batch["lr"].max() <= 1 and 0 <= batch["hr"].min() and batch["hr"].max() <= 1
        for lr, hr, name in zip(batch["lr"], batch["hr"], batch["name"]):
            full = read_image(image_dirs / "HR" / f"{name}.png")[:, :96, :120]
            k, top, left = locate(hr, full, SCALE)
            ks.add(k)
            full_lr = imresize(full, 0.25).clamp(0, 1)
            expected = dihedral(full_lr[:, top // 4 : top // 4 + 8, left // 4 : left // 4 + 8], k)
            torch.testing.assert_close(lr, expected, rtol=0, atol=1e-5)
    assert len(ks) > 2  # augmentation is on

    val = first_batch(dm.val_dataloader())
    assert val["hr"].shape == (1, 3, 96, 120) and val["lr"].shape == (1, 3, 24, 30)  # mod-cropped


def test_image_quantized_lr_is_8bit(image_dirs):
    dm = ImageSRDataModule(train_hr=str(image_dirs / "HR"), patch_size=32, batch_size=4, num_workers=0)
    lr = first_batch(dm.train_dataloader())["lr"]
    torch.testing.assert_close(lr * 255, (lr * 255).round(), rtol=0, atol=1e-4)


def test_image_paired_crops_agree(image_dirs):
    dm = ImageSRDataModule(
        train_hr=str(image_dirs / "HR"), train_lr=str(image_dirs / "LR_bicubic" / "X4"),
        val_hr=str(image_dirs / "val"), patch_size=32, batch_size=8, num_workers=0, seed=5,
    )
    batch = first_batch(dm.train_dataloader())
    for lr, hr, name in zip(batch["lr"], batch["hr"], batch["name"]):
        k_hr, top, left = locate(hr, read_image(image_dirs / "HR" / f"{name}.png"), SCALE)
        k_lr, lr_top, lr_left = locate(lr, read_image(image_dirs / "LR_bicubic" / "X4" / f"{name}x4.png"), 1)
        assert (k_hr, top, left) == (k_lr, lr_top * SCALE, lr_left * SCALE)
    # Set5/Set14 layout: a root holding GTmod12/ and LRbicx4/.
    val = first_batch(dm.val_dataloader())
    assert val["hr"].shape == (1, 3, 64, 64) and val["lr"].shape == (1, 3, 16, 16) and val["name"] == ["star"]
    assert torch.equal(val["lr"][0], read_image(image_dirs / "val" / "LRbicx4" / "star.png"))


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_image_reproducible_from_seed_and_workers(image_dirs):
    def batch(seed, workers=0):
        dm = ImageSRDataModule(
            train_hr=str(image_dirs / "HR"), patch_size=32, batch_size=4, num_workers=workers, seed=seed
        )
        return first_batch(dm.train_dataloader())

    a, b, c = batch(3), batch(3), batch(4)
    assert torch.equal(a["hr"], b["hr"]) and torch.equal(a["lr"], b["lr"]) and a["name"] == b["name"]
    assert not torch.equal(a["hr"], c["hr"])
    d = batch(3, workers=2)
    assert torch.equal(a["hr"], d["hr"]) and torch.equal(a["lr"], d["lr"])


def test_image_samples_per_epoch(image_dirs):
    dm = ImageSRDataModule(
        train_hr=str(image_dirs / "HR"), patch_size=32, batch_size=4, num_workers=0, samples_per_epoch=12
    )
    loader = dm.train_dataloader()
    names = [n for batch in loader for n in batch["name"]]
    assert len(loader) == 3 and sorted(set(names)) == ["0001", "0002", "0003", "0004"]
    assert all(names.count(n) == 3 for n in set(names))


def test_image_default_uses_sample_photos():
    dm = ImageSRDataModule(batch_size=2, num_workers=0, eval_patch_size=64)
    batch = first_batch(dm.train_dataloader())
    assert batch["lr"].shape == (2, 3, 32, 32) and batch["hr"].shape == (2, 3, 128, 128)
    assert set(batch["name"]) <= {Path(n).stem for n in SAMPLE_IMAGES["train"]}
    assert first_batch(dm.val_dataloader())["hr"].shape == (1, 3, 64, 64)
    assert {p.stem for p in sample_image_paths("test")} == {"coffee", "rocket"}
    splits = [set(SAMPLE_IMAGES[s]) for s in ("train", "val", "test")]
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])


def test_image_rgba_warned_once(tmp_path, photos):
    for i in range(3):
        rgba = np.concatenate([to_u8(photos[i][:, :40, :40]), np.full((40, 40, 1), 200, np.uint8)], axis=-1)
        (tmp_path / "hr").mkdir(exist_ok=True)
        Image.fromarray(rgba).save(tmp_path / "hr" / f"{i}.png")
    dm = ImageSRDataModule(train_hr=str(tmp_path / "hr"), patch_size=32, batch_size=2, num_workers=0)
    with pytest.warns(UserWarning, match="alpha") as record:
        dm.setup("fit")
    assert sum("alpha" in str(w.message) for w in record) == 1
    assert first_batch(dm.train_dataloader())["hr"].shape == (2, 3, 32, 32)


# -- bad input -------------------------------------------------------------------------------


def _image_dm(**kwargs) -> ImageSRDataModule:
    return ImageSRDataModule(patch_size=32, batch_size=2, num_workers=0, **kwargs)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_hr: folder .*nowhere"):
        _image_dm(train_hr=str(tmp_path / "nowhere")).setup("fit")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files .*empty"):
        _image_dm(train_hr=str(tmp_path / "empty")).setup("fit")


def test_unreadable_and_truncated_files(tmp_path, photos):
    hr = tmp_path / "hr"
    for i in range(3):
        save_png(photos[i][:, :48, :48], hr / f"{i}.png")
    (hr / "garbage.png").write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="garbage.png"):
        _image_dm(train_hr=str(hr)).setup("fit")
    (hr / "garbage.png").unlink()

    data = (hr / "0.png").read_bytes()
    (hr / "trunc.png").write_bytes(data[: len(data) // 2])
    dm = _image_dm(train_hr=str(hr))
    dm.setup("fit")  # the header is fine; the damage shows when the file is decoded
    dataset = dm.datasets["train"]
    index = [p.name for p in dataset.pairs].index("trunc")
    with pytest.raises(ValueError, match="trunc.png"):
        dataset[index]

    dm = _image_dm(train_hr=str(hr), skip_unreadable=True)
    with pytest.warns(UserWarning, match="trunc.png"):
        dm.setup("fit")
    assert sorted(p.name for p in dm.datasets["train"].pairs) == ["0", "1", "2"]


def test_too_small_mismatched_and_unpaired(tmp_path, photos):
    save_png(photos[0][:, :48, :48], tmp_path / "hr" / "big.png")
    save_png(photos[1][:, :20, :40], tmp_path / "hr" / "small.png")
    with pytest.raises(ValueError, match="small.png.*patch_size=32"):
        _image_dm(train_hr=str(tmp_path / "hr")).setup("fit")
    (tmp_path / "hr" / "small.png").unlink()

    save_png(photos[0][:, :10, :10], tmp_path / "lr" / "big.png")
    with pytest.raises(ValueError, match=r"big.png: LR image is 10x10 .* must be 12x12"):
        _image_dm(train_hr=str(tmp_path / "hr"), train_lr=str(tmp_path / "lr")).setup("fit")

    save_png(photos[0][:, :48, :48], tmp_path / "hr" / "alone.png")
    save_png(photos[0][:, :12, :12], tmp_path / "lr" / "big.png")
    with pytest.raises(FileNotFoundError, match="alone.png"):
        _image_dm(train_hr=str(tmp_path / "hr"), train_lr=str(tmp_path / "lr")).setup("fit")


def test_bad_arguments():
    with pytest.raises(ValueError, match="patch_size"):
        ImageSRDataModule(patch_size=30, scale=4)
    with pytest.raises(ValueError, match="samples_per_epoch"):
        ImageSRDataModule(samples_per_epoch=4, batch_size=16)
    with pytest.raises(ValueError, match="num_frames"):
        VideoSRDataModule(num_frames=4)
    with pytest.raises(ValueError, match="upsample_on"):
        VideoSRDataModule(upsample_on="gpu")


def test_video_bad_input(tmp_path, clip_dirs):
    (tmp_path / "garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with pytest.raises(ValueError, match="garbage.mp4"):
        VideoFile(tmp_path / "garbage.mp4")
    data = (clip_dirs / "mp4" / "clip0.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="cut.mp4"):
        VideoFile(tmp_path / "cut.mp4")

    short = tmp_path / "short" / "clipA"
    shutil.copytree(clip_dirs / "train" / "clip0", short)
    for f in sorted(short.iterdir())[3:]:
        f.unlink()
    with pytest.raises(ValueError, match="clipA: clip has 3 frames, fewer than num_frames=5"):
        VideoSRDataModule(train=str(short), val=str(short), patch_size=32, num_workers=0).setup("fit")

    mixed = tmp_path / "mixed"
    shutil.copytree(clip_dirs / "train" / "clip1", mixed)
    Image.open(mixed / "0003.png").crop((0, 0, 40, 40)).save(mixed / "0003.png")
    with pytest.raises(ValueError, match="0003.png: frame is 40x40"):
        FrameFolder(mixed)

    # scikit-image's real (tiny, 25x14) animated GIF: decodable, but too small for the patch.
    gif = str(skimage_data_dir() / "no_time_for_that_tiny.gif")
    assert len(VideoFile(gif)) == 24
    with pytest.raises(ValueError, match="no_time_for_that_tiny.gif: frames are 25x14"):
        VideoSRDataModule(train=gif, val=gif, patch_size=32, num_workers=0).setup("fit")

    with pytest.raises(FileNotFoundError, match="train: .*missing_dir does not exist"):
        VideoSRDataModule(train=str(tmp_path / "missing_dir")).setup("fit")
    (tmp_path / "no_clips" / "empty_sub").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="train: no clips in .*no_clips"):
        VideoSRDataModule(train=str(tmp_path / "no_clips")).setup("fit")
    bad_root = tmp_path / "clips"
    shutil.copytree(clip_dirs / "train", bad_root)
    shutil.copy(tmp_path / "garbage.mp4", bad_root / "zz.mp4")
    dm = VideoSRDataModule(train=str(bad_root), patch_size=32, num_workers=0, skip_unreadable=True)
    with pytest.warns(UserWarning, match="zz.mp4"):
        dm.setup("fit")
    assert "zz" not in dm.split_names["train"] + dm.split_names["val"]


# -- video datamodule ------------------------------------------------------------------------


def test_video_frame_folder_batches(clip_dirs):
    dm = VideoSRDataModule(
        train=str(clip_dirs / "train"), test=str(clip_dirs / "test"), patch_size=32,
        batch_size=4, num_workers=0, quantize_lr=False, seed=0,
    )
    batch = first_batch(dm.train_dataloader())
    assert batch["lr"].shape == (4, 5, 3, 8, 8) and batch["hr"].shape == (4, 3, 32, 32)
    assert batch["lr"].min() >= 0 and batch["lr"].max() <= 1 and batch["hr"].min() >= 0 and batch["hr"].max() <= 1
    # The HR target is a crop of the centre frame, transformed like the LR window.
    for lr, hr, name in zip(batch["lr"], batch["hr"], batch["name"]):
        clip, frame = name.split("/")
        full = read_image(clip_dirs / "train" / clip / f"{frame}.png")
        k, top, left = locate(hr, full, SCALE)
        centre_lr = dihedral(imresize(full, 0.25).clamp(0, 1)[:, top // 4 : top // 4 + 8, left // 4 : left // 4 + 8], k)
        torch.testing.assert_close(lr[2], centre_lr, rtol=0, atol=1e-5)

    # Evaluation: whole frames, window mirrored at the clip's start (frames 2, 1, 0, 1, 2).
    test = first_batch(dm.test_dataloader())
    assert test["name"] == ["clip4/0000"] and test["hr"].shape == (1, 3, 48, 64)
    frames = [read_image(clip_dirs / "test" / "clip4" / f"{t:04d}.png") for t in (2, 1, 0, 1, 2)]
    expected = imresize(torch.stack(frames), 0.25).clamp(0, 1)
    torch.testing.assert_close(test["lr"][0], expected, rtol=0, atol=1e-5)
    assert torch.equal(test["hr"][0], frames[2])


def test_video_upsampled_input_workers_equals_accelerator(clip_dirs):
    def batch(where):
        dm = VideoSRDataModule(
            train=str(clip_dirs / "train"), patch_size=32, batch_size=2, num_workers=0,
            upsample_input=True, upsample_on=where, seed=1,
        )
        return dm.on_after_batch_transfer(first_batch(dm.train_dataloader()), 0)

    workers, accel = batch("workers"), batch("accelerator")
    assert workers["lr"].shape == accel["lr"].shape == (2, 5, 3, 32, 32)
    torch.testing.assert_close(workers["lr"], accel["lr"], rtol=0, atol=1e-6)
    torch.testing.assert_close(workers["lr"] * 255, (workers["lr"] * 255).round(), rtol=0, atol=1e-4)


def test_lightning_calls_the_upsampling_hook(clip_dirs):
    import pytorch_lightning as pl

    class Probe(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.shapes = []

        def training_step(self, batch, batch_idx):
            self.shapes.append(tuple(batch["lr"].shape))
            return (self.weight - batch["hr"].mean()) ** 2

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = VideoSRDataModule(
        train=str(clip_dirs / "train"), patch_size=32, batch_size=2, num_workers=0, upsample_input=True
    )
    probe = Probe()
    trainer = pl.Trainer(
        max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(probe, dm)
    assert probe.shapes == [(2, 5, 3, 32, 32)] * 2


def test_video_mp4_random_access_and_batches(clip_dirs):
    video = VideoFile(clip_dirs / "mp4" / "clip0.mp4")
    assert len(video) == 7 and (video.height, video.width) == (48, 64)
    with av.open(str(clip_dirs / "mp4" / "clip0.mp4")) as container:
        sequential = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    for indices in ([4, 5, 6], [0, 1, 2], [2, 1, 0, 1, 2], [6]):
        got = video.read(indices)
        expected = torch.from_numpy(np.stack([sequential[i] for i in indices])).permute(0, 3, 1, 2).float() / 255
        assert torch.equal(got, expected)
    # Same frame order as the PNG frames the file was made from (lossy codec: close, not equal).
    pngs = FrameFolder(clip_dirs / "train" / "clip0")
    err_same = (video.read([3]) - pngs.read([3])).abs().mean()
    err_next = (video.read([3]) - pngs.read([4])).abs().mean()
    assert err_same < 0.02 and err_same * 2 < err_next

    dm = VideoSRDataModule(
        train=str(clip_dirs / "mp4"), val=str(clip_dirs / "mp4" / "clip1.mp4"),
        test=str(clip_dirs / "mp4" / "clip0.mp4"),
        patch_size=32, batch_size=3, num_workers=0,
    )
    batch = first_batch(dm.train_dataloader())
    assert batch["lr"].shape == (3, 5, 3, 8, 8) and batch["hr"].shape == (3, 3, 32, 32)
    assert first_batch(dm.test_dataloader())["lr"].shape == (1, 5, 3, 12, 16)


def test_video_split_reproducible_and_disjoint(clip_dirs):
    def names(seed):
        dm = VideoSRDataModule(
            train=str(clip_dirs / "train"), test=str(clip_dirs / "test"), patch_size=32, num_workers=0, seed=seed
        )
        dm.setup("fit")
        dm.setup("test")
        return dm.split_names

    a = names(0)
    assert a == names(0)
    assert len(a["val"]) == 1 and len(a["train"]) == 3  # 80/20 of 4 training clips
    assert set(a["train"]).isdisjoint(a["val"]) and set(a["train"] + a["val"]).isdisjoint(a["test"])
    assert set(a["train"] + a["val"]) == {"clip0", "clip1", "clip2", "clip3"}
    assert len({tuple(names(s)["val"]) for s in range(6)}) > 1


def test_nothing_written_into_data_folders(image_dirs, clip_dirs):
    before = snapshot(image_dirs), snapshot(clip_dirs)
    dm = ImageSRDataModule(
        train_hr=str(image_dirs / "HR"), train_lr=str(image_dirs / "LR_bicubic" / "X4"), val_hr=str(image_dirs / "HR"),
        test_hr=str(image_dirs / "val"), patch_size=32, batch_size=2, num_workers=0,
    )
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        first_batch(loader)
    vdm = VideoSRDataModule(
        train=str(clip_dirs / "mp4"), val=str(clip_dirs / "train"), test=str(clip_dirs / "test"),
        patch_size=32, batch_size=2, num_workers=0,
    )
    for loader in (vdm.train_dataloader(), vdm.val_dataloader(), vdm.test_dataloader()):
        first_batch(loader)
    assert (snapshot(image_dirs), snapshot(clip_dirs)) == before


# -- built-in sample clips -------------------------------------------------------------------


def test_sample_clips_and_default_video_datamodule(sample_cache):
    frames_dir = sample_video_dir("train", cache_dir=sample_cache)
    assert sorted(p.name for p in frames_dir.iterdir()) == sorted(c.name for c in SAMPLE_CLIPS if c.split == "train")
    clip = FrameFolder(frames_dir / "hubble_pan")
    assert len(clip) == 16 and (clip.height, clip.width) == (180, 240)
    # Consecutive frames differ (the camera moves) but are close (it moves a little).
    a, b = clip.read([5, 6])
    assert 0.002 < (a - b).abs().mean() < 0.2
    mp4 = sample_video_dir("test", cache_dir=sample_cache, fmt="mp4")
    assert len(VideoFile(mp4 / "coffee_pan.mp4")) == 16
    built = snapshot(sample_cache)
    sample_video_dir("train", cache_dir=sample_cache)  # reused, not rebuilt
    assert snapshot(sample_cache) == built

    dm = VideoSRDataModule(
        sample_cache_dir=str(sample_cache), batch_size=2, num_workers=0, eval_patch_size=64, eval_frame_step=8
    )
    batch = first_batch(dm.train_dataloader())
    assert batch["lr"].shape == (2, 5, 3, 32, 32) and batch["hr"].shape == (2, 3, 128, 128)
    val = first_batch(dm.val_dataloader())
    assert val["lr"].shape == (1, 5, 3, 16, 16) and val["hr"].shape == (1, 3, 64, 64)
    assert set(dm.split_names["val"]).isdisjoint(dm.split_names["train"])
    test_loader = dm.test_dataloader()
    assert len(test_loader) == 4  # 2 test clips x frames 0 and 8


def test_an_image_link_leading_nowhere_is_skipped_with_a_warning_naming_it(tmp_path, photos):
    from conftest import save_png

    from salightning.data.io import list_images

    save_png(photos[0][:, :32, :32], tmp_path / "a.png")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")  # a symlink loop
    (tmp_path / "gone.png").symlink_to(tmp_path / "deleted.png")
    with pytest.warns(UserWarning, match=r"skipped 2 image link\(s\) .* that lead to no file .*first: gone\.png"):
        assert list_images(tmp_path, "train_hr") == [tmp_path / "a.png"]
