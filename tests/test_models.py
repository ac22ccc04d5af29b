"""Generators, discriminators and checkpoint loading of salightning.models."""

from __future__ import annotations

import re

import pytest
import torch

from salightning.models import (
    RRDBNet,
    SRGANDiscriminator,
    SRResNet,
    VGGStyleDiscriminator,
    VSRResFeatGANDiscriminator,
    VSRResNet,
    convert_esrgan_state_dict,
)
from salightning.checkpoints import load_pretrained


def crop(photo: torch.Tensor, size: int, top: int = 0, left: int = 0) -> torch.Tensor:
    """A (1, 3, size, size) crop of a (3, H, W) photo, from near its centre."""
    _, h, w = photo.shape
    t, l = (h - size) // 2 + top, (w - size) // 2 + left
    return photo[:, t : t + size, l : l + size].unsqueeze(0).contiguous()


def frames(photo: torch.Tensor, size: int, num_frames: int = 5) -> torch.Tensor:
    """(1, T, 3, size, size): a window sliding one pixel per frame over a photo (camera pan)."""
    return torch.stack([crop(photo, size, left=t)[0] for t in range(num_frames)]).unsqueeze(0)


def small_rrdbnet(seed: int, **kwargs) -> RRDBNet:
    torch.manual_seed(seed)
    return RRDBNet(num_features=16, num_blocks=2, growth_channels=8, **kwargs)


# ---------------------------------------------------------------- sizes


def test_rrdbnet_x4_has_esrgan_parameter_count():
    assert sum(p.numel() for p in RRDBNet().parameters()) == 16_697_987


@pytest.mark.parametrize(
    "make, x_size, out_shape",
    [
        (lambda: RRDBNet(), 16, (1, 3, 64, 64)),
        (lambda: SRResNet(), 16, (1, 3, 64, 64)),
        (lambda: VSRResNet(), 32, (1, 3, 32, 32)),
    ],
    ids=["RRDBNet", "SRResNet", "VSRResNet"],
)
def test_generator_full_size_forward_backward(photos, make, x_size, out_shape):
    torch.manual_seed(0)
    model = make()
    x = frames(photos[0], x_size) if model.num_frames > 1 else crop(photos[0], x_size)
    out = model(x)
    assert out.shape == out_shape
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize(
    "make, size",
    [
        (lambda: VGGStyleDiscriminator(), 128),
        (lambda: SRGANDiscriminator(), 96),
        (lambda: VSRResFeatGANDiscriminator(), 64),
    ],
    ids=["VGGStyle", "SRGAN", "VSRResFeatGAN"],
)
def test_discriminator_full_size_forward_backward(photo_batch, make, size):
    torch.manual_seed(0)
    model = make()
    logits = model(photo_batch[:2, :, :size, :size])
    assert logits.shape == (2, 1)
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    "kwargs, lr_size, hr_size",
    [({"scale": 2}, 12, 24), ({"scale": 3}, 12, 36), ({"scale": 2, "pixel_unshuffle": True}, 12, 24),
     ({"scale": 1, "pixel_unshuffle": True}, 12, 12)],
)
def test_rrdbnet_other_scales(photos, kwargs, lr_size, hr_size):
    model = small_rrdbnet(0, **kwargs)
    assert model.scale == kwargs["scale"]
    assert model(crop(photos[1], lr_size)).shape == (1, 3, hr_size, hr_size)


def test_srresnet_scale_3_and_8(photos):
    x = crop(photos[1], 8)
    assert SRResNet(num_blocks=1, num_features=8, scale=3)(x).shape == (1, 3, 24, 24)
    assert SRResNet(num_blocks=1, num_features=8, scale=8)(x).shape == (1, 3, 64, 64)


def test_generator_attributes():
    rrdb = RRDBNet(num_blocks=1)
    assert (rrdb.scale, rrdb.num_frames, rrdb.input_upsampled) == (4, 1, False)
    assert (SRResNet(num_blocks=1, scale=2).scale, SRResNet(num_blocks=1).num_frames) == (2, 1)
    vsr = VSRResNet(num_blocks=1, scale=3)
    assert (vsr.scale, vsr.num_frames, vsr.input_upsampled) == (3, 5, True)


def test_srgan_discriminator_is_size_flexible(photo_batch):
    model = SRGANDiscriminator(num_features=8)
    assert model(photo_batch[:2, :, :64, :80]).shape == (2, 1)


# ---------------------------------------------------------------- VGG-style D input size


def test_vgg_discriminator_adaptive_pool_accepts_96(photo_batch):
    model = VGGStyleDiscriminator(num_features=16, adaptive_pool=True)
    assert model(photo_batch[:2, :, :96, :96]).shape == (2, 1)


def test_vgg_discriminator_default_rejects_96(photo_batch):
    model = VGGStyleDiscriminator(num_features=16)
    with pytest.raises(ValueError, match="input_size=128"):
        model(photo_batch[:2, :, :96, :96])


def test_vgg_discriminator_adaptive_pool_is_identity_at_input_size(photo_batch):
    fixed = VGGStyleDiscriminator(num_features=8).eval()
    adaptive = VGGStyleDiscriminator(num_features=8, adaptive_pool=True).eval()
    adaptive.load_state_dict(fixed.state_dict())
    x = photo_batch[:2]
    torch.testing.assert_close(adaptive(x), fixed(x))


def test_vgg_discriminator_256_has_basicsr_layout():
    keys = VGGStyleDiscriminator(input_size=256).state_dict().keys()
    assert "conv5_1.weight" in keys and "bn5_1.running_mean" in keys
    assert "conv5_0.weight" not in VGGStyleDiscriminator().state_dict()


def test_vgg_discriminator_rejects_bad_input_size():
    with pytest.raises(ValueError, match="input_size"):
        VGGStyleDiscriminator(input_size=100)


# ---------------------------------------------------------------- input checks


def test_generators_check_rank_and_channels(photos):
    model = small_rrdbnet(0)
    x = crop(photos[0], 8)
    with pytest.raises(ValueError, match=re.escape("x must have 4 dimensions")):
        model(x[0])
    with pytest.raises(ValueError, match="x must have 3 channels"):
        model(x[:, :2])
    with pytest.raises(ValueError, match="x must have 3 channels"):
        SRResNet(num_blocks=1)(x[:, :1])


def test_vsrresnet_checks_frames_rank_and_channels(photos):
    model = VSRResNet(num_blocks=1)
    x = frames(photos[0], 16)
    with pytest.raises(ValueError, match=r"num_frames=5 .* got shape \(1, 3, 3, 16, 16\)"):
        model(x[:, :3])
    with pytest.raises(ValueError, match="x must have 5 dimensions"):
        model(x[:, 0])
    with pytest.raises(ValueError, match="x must have 3 channels"):
        model(x[:, :, :1])


def test_discriminators_check_rank_channels_and_size(photo_batch):
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        SRGANDiscriminator(num_features=8)(photo_batch[0])
    with pytest.raises(ValueError, match="x must have 3 channels"):
        VGGStyleDiscriminator(num_features=8)(photo_batch[:1, :1])
    with pytest.raises(ValueError, match="at least 8x8"):
        VSRResFeatGANDiscriminator(num_features=8)(photo_batch[:1, :, :4, :4])
    with pytest.raises(ValueError, match="at least 32x32"):
        VGGStyleDiscriminator(num_features=8, adaptive_pool=True)(photo_batch[:1, :, :16, :16])


def test_pixel_unshuffle_checks_divisibility(photos):
    with pytest.raises(ValueError, match="divisible by 2"):
        small_rrdbnet(0, scale=2, pixel_unshuffle=True)(crop(photos[0], 9))


def test_constructors_reject_bad_scale():
    with pytest.raises(ValueError, match="scale"):
        RRDBNet(num_blocks=1, scale=5)
    with pytest.raises(ValueError, match="scale"):
        RRDBNet(num_blocks=1, scale=4, pixel_unshuffle=True)
    with pytest.raises(ValueError, match="scale"):
        SRResNet(num_blocks=1, scale=5)


# ---------------------------------------------------------------- checkpoints


def to_esrgan_keys(state: dict) -> dict:
    """BasicSR keys -> the ESRGAN authors' release (RRDBNet_arch.py)."""
    out = {}
    for k, v in state.items():
        k = re.sub(r"^body\.(\d+)\.rdb(\d)\.", r"RRDB_trunk.\1.RDB\2.", k)
        k = k.replace("conv_body.", "trunk_conv.").replace("conv_up", "upconv").replace("conv_hr.", "HRconv.")
        out[k] = v
    return out


def to_old_arch_keys(state: dict, num_blocks: int) -> dict:
    """BasicSR keys -> the first ESRGAN release (x4: one nn.Sequential called ``model``)."""
    top = {"conv_first": "model.0", "conv_body": f"model.1.sub.{num_blocks}", "conv_up1": "model.3",
           "conv_up2": "model.6", "conv_hr": "model.8", "conv_last": "model.10"}
    out = {}
    for k, v in state.items():
        if m := re.match(r"^body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)$", k):
            out[f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{m[4]}"] = v
        else:
            name, param = k.rsplit(".", 1)
            out[f"{top[name]}.{param}"] = v
    return out


CHECKPOINT_FORMATS = {
    "plain_basicsr_keys": lambda sd, other: sd,
    "esrgan_release": lambda sd, other: to_esrgan_keys(sd),
    "esrgan_old_arch": lambda sd, other: to_old_arch_keys(sd, num_blocks=2),
    "basicsr_params": lambda sd, other: {"params": sd},
    "basicsr_params_ema": lambda sd, other: {"params": other, "params_ema": sd},
    "dataparallel": lambda sd, other: {f"module.{k}": v for k, v in sd.items()},
    "lightning": lambda sd, other: {
        "epoch": 3,
        "global_step": 120,
        "state_dict": {**{f"generator.{k}": v for k, v in sd.items()},
                       "discriminator.linear2.weight": torch.zeros(1, 100)},
    },
}


@pytest.mark.parametrize("fmt", CHECKPOINT_FORMATS)
def test_load_released_checkpoint_formats(tmp_path, fmt):
    source = small_rrdbnet(1).state_dict()
    decoy = small_rrdbnet(2).state_dict()  # BasicSR's non-EMA weights, must not be chosen
    path = tmp_path / f"{fmt}.pth"
    torch.save(CHECKPOINT_FORMATS[fmt](source, decoy), path)

    model = load_pretrained(small_rrdbnet(3), path)
    loaded = model.state_dict()
    assert loaded.keys() == source.keys()
    for key, value in source.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)


def test_convert_prefers_params_ema():
    ema, params = small_rrdbnet(1).state_dict(), small_rrdbnet(2).state_dict()
    out = convert_esrgan_state_dict({"params": params, "params_ema": ema})
    assert torch.equal(out["conv_first.weight"], ema["conv_first.weight"])


def test_wrong_scale_checkpoint_gives_clear_error(tmp_path):
    path = tmp_path / "rrdb_x2.pth"
    torch.save({"params_ema": small_rrdbnet(1, scale=2).state_dict()}, path)
    with pytest.raises(ValueError, match=r"rrdb_x2\.pth.*scale mismatch.*scale=4"):
        load_pretrained(small_rrdbnet(0, scale=4), path)
    load_pretrained(small_rrdbnet(0, scale=2), path)


def test_pixel_unshuffle_checkpoint_hint(tmp_path):
    path = tmp_path / "realesrgan_x2.pth"
    torch.save({"params_ema": small_rrdbnet(1, scale=2, pixel_unshuffle=True).state_dict()}, path)
    with pytest.raises(ValueError, match=r"pixel_unshuffle=True"):
        load_pretrained(small_rrdbnet(0, scale=2), path)


def test_num_blocks_mismatch_is_named(tmp_path):
    path = tmp_path / "deep.pth"
    torch.save(RRDBNet(num_features=16, num_blocks=3, growth_channels=8).state_dict(), path)
    with pytest.raises(ValueError, match="num_blocks mismatch: the file has 3"):
        load_pretrained(small_rrdbnet(0), path)


def test_lightning_checkpoint_without_prefix_is_an_error(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"net.conv.weight": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match=r"other\.ckpt.*prefix='generator\.'"):
        load_pretrained(small_rrdbnet(0), path)


def test_load_pretrained_non_strict_allows_missing_keys(tmp_path):
    source = small_rrdbnet(1).state_dict()
    path = tmp_path / "partial.pth"
    torch.save({k: v for k, v in source.items() if not k.startswith("conv_last")}, path)
    with pytest.raises(ValueError, match="missing key"):
        load_pretrained(small_rrdbnet(0), path)
    model = load_pretrained(small_rrdbnet(0), path, strict=False)
    assert torch.equal(model.conv_first.weight, source["conv_first.weight"])


def test_load_pretrained_other_generators_from_lightning(tmp_path):
    source = VSRResNet(num_blocks=2, num_features=16, frame_features=8)
    path = tmp_path / "vsr.ckpt"
    torch.save({"state_dict": {f"generator.{k}": v for k, v in source.state_dict().items()}}, path)
    model = load_pretrained(VSRResNet(num_blocks=2, num_features=16, frame_features=8), path)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
