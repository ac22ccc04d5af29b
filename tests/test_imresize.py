"""MATLAB-compatible bicubic resize: compared with a plain float64 re-statement of MATLAB's
algorithm written here (loops over output pixels and kernel taps), on real photos."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from salightning.ops import Imresize, imresize, resize_matrix


def _cubic(t: float) -> float:
    a = abs(t)
    if a <= 1:
        return 1.5 * a**3 - 2.5 * a**2 + 1
    if a <= 2:
        return -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
    return 0.0


def _reference_axis(img: np.ndarray, scale: float, out_len: int, axis: int) -> np.ndarray:
    """MATLAB's ``contributions`` + ``resizeAlongDim``, one output pixel at a time (float64)."""
    in_len = img.shape[axis]
    shrink = scale < 1
    width = 4.0 / scale if shrink else 4.0
    mirror = list(range(1, in_len + 1)) + list(range(in_len, 0, -1))  # MATLAB's "aux"
    moved = np.moveaxis(img, axis, 0)
    out = np.zeros((out_len,) + moved.shape[1:])
    for i in range(1, out_len + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = math.ceil(width) + 2
        weights, rows = [], []
        for p in range(taps):
            j = left + p
            weights.append(scale * _cubic(scale * (u - j)) if shrink else _cubic(u - j))
            rows.append(mirror[(j - 1) % len(mirror)] - 1)
        total = sum(weights)
        for w, r in zip(weights, rows):
            out[i - 1] += (w / total) * moved[r]
    return np.moveaxis(out, 0, axis)


def reference_imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """(C, H, W) float64 -> MATLAB ``imresize(img, scale)`` (bicubic, antialiased), rows first."""
    out_h, out_w = math.ceil(scale * img.shape[1]), math.ceil(scale * img.shape[2])
    return _reference_axis(_reference_axis(img, scale, out_h, 1), scale, out_w, 2)


@pytest.mark.parametrize("scale", [0.25, 0.5])
def test_downscale_matches_matlab_reference(photos, scale):
    for photo in photos:
        ref = reference_imresize(photo.double().numpy(), scale)
        out = imresize(photo, scale)
        assert out.dtype == torch.float32
        assert out.shape == ref.shape
        diff = np.abs(out.double().numpy() - ref).max()
        assert diff <= 1 / 255
        assert diff < 1e-5  # float32 rounding only


def test_upscale_matches_matlab_reference(photos):
    for photo in photos:
        crop = photo[:, 40:88, 60:124]  # x4 of the whole photo would make the loops slow
        ref = reference_imresize(crop.double().numpy(), 4.0)
        out = imresize(crop, 4)
        assert out.shape == (3, 192, 256)
        assert np.abs(out.double().numpy() - ref).max() < 1e-5


def test_float64_is_exact(photos):
    photo = photos[1][:, :101, :133].double()
    ref = reference_imresize(photo.numpy(), 0.25)
    assert imresize(photo, 0.25).dtype == torch.float64
    assert np.abs(imresize(photo, 0.25).numpy() - ref).max() < 1e-12


def test_odd_sizes_and_border_are_matlab(photos):
    """Sizes not divisible by the factor: MATLAB takes ceil and places pixels with the scale."""
    photo = photos[0][:, :101, :97]
    out = imresize(photo, 0.25)
    assert out.shape == (3, 26, 25)
    ref = reference_imresize(photo.double().numpy(), 0.25)
    assert np.abs(out.double().numpy() - ref).max() < 1e-5


def test_interior_equals_antialiased_interpolate(photos):
    """Away from the borders, torch's antialiased bicubic (PIL-style, a=-0.5) uses the same
    weights: an independent check of the kernel and of the pixel placement."""
    photo = photos[2][None]
    ours = imresize(photo, 0.25)
    theirs = F.interpolate(photo, size=ours.shape[-2:], mode="bicubic", antialias=True, align_corners=False)
    assert (ours - theirs)[..., 3:-3, 3:-3].abs().max() < 1e-5
    # ...and the borders differ (symmetric padding vs a renormalised truncated kernel).
    assert (ours - theirs).abs().max() > 1e-3
    up = imresize(photo[..., :64, :64], 4.0)
    up_theirs = F.interpolate(photo[..., :64, :64], scale_factor=4, mode="bicubic", antialias=True)
    assert (up - up_theirs)[..., 8:-8, 8:-8].abs().max() < 1e-5


def test_size_option_leading_dims_and_module(photos):
    photo = photos[3][:, :120, :160]
    batch = torch.stack([photo, photo.flip(-1)])[None]  # (1, 2, 3, H, W)
    out = imresize(batch, size=(30, 40))
    assert out.shape == (1, 2, 3, 30, 40)
    torch.testing.assert_close(out[0, 0], imresize(photo, 0.25), rtol=0, atol=1e-6)
    torch.testing.assert_close(out[0, 1], imresize(photo.flip(-1), 0.25), rtol=0, atol=1e-6)
    assert torch.equal(Imresize(size=(30, 40))(batch), out)
    # Non-uniform output size: each axis uses its own scale.
    assert imresize(photo, size=(60, 20)).shape == (3, 60, 20)
    assert imresize(photo, (0.5, 0.25)).shape == (3, 60, 40)


def test_matrix_rows_sum_to_one_and_constant_images_stay_constant():
    for in_len, out_len in [(1356, 339), (7, 28), (300, 100), (5, 2)]:
        m = resize_matrix(in_len, out_len)
        torch.testing.assert_close(m.sum(1), torch.ones(out_len, dtype=torch.float64))
    flat = torch.full((3, 50, 70), 0.3)
    torch.testing.assert_close(imresize(flat, 0.25), torch.full((3, 13, 18), 0.3))
    assert imresize(flat, 1 / 3).shape == (3, 17, 24)
    assert imresize(torch.zeros(1, 300, 300), 1 / 3).shape == (1, 100, 100)


def test_half_precision_and_gradients(photos):
    photo = photos[4][:, :64, :64]
    assert imresize(photo.half(), 0.5).dtype == torch.float16
    x = photo.clone().requires_grad_(True)
    imresize(x, 0.5).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_values_not_clamped(photos):
    """MATLAB clamps only integer images: bicubic overshoot at edges survives in float."""
    photo = photos[1]
    out = imresize(photo, 4.0 / 3.0)
    assert out.min() < 0 or out.max() > 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scale": None}, "exactly one"),
        ({"scale": 0.5, "size": (2, 2)}, "exactly one"),
        ({"scale": -0.5}, "scale"),
        ({"scale": 0.0}, "scale"),
        ({"size": (0, 4)}, "size"),
        ({"scale": (0.5, 0.5, 0.5)}, "scale"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        imresize(torch.zeros(3, 8, 8), **kwargs)


def test_bad_tensor():
    with pytest.raises(ValueError, match="x"):
        imresize(torch.zeros(3, 8, 8, dtype=torch.uint8), 0.5)
    with pytest.raises(ValueError, match="x"):
        imresize(torch.zeros(8), 0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(photos):
    photo = photos[0][None]
    torch.testing.assert_close(imresize(photo.cuda(), 0.25).cpu(), imresize(photo, 0.25), rtol=0, atol=1e-5)


def test_ops_docstring_examples_run():
    import doctest
    import importlib

    for name in ("salightning.ops.imresize", "salightning.ops.quantize"):
        module = importlib.import_module(name)  # the attribute ops.imresize is the function
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_quantize_8bit_is_what_an_8_bit_png_reads_back(photos, tmp_path):
    from PIL import Image

    from salightning.data import read_image
    from salightning.ops import Quantize8bit, quantize_8bit, to_uint8

    smooth = (imresize(photos[1][:, :60, :80], 0.5) - 0.5) * 3 + 0.5  # off the 8-bit grid, and out of [0, 1]
    assert ((smooth * 255).round() != smooth * 255).any() and (smooth < 0).any() and (smooth > 1).any()
    levels = to_uint8(smooth)
    assert levels.dtype == torch.uint8 and levels.shape == smooth.shape
    Image.fromarray(levels.permute(1, 2, 0).numpy()).save(tmp_path / "lr.png")
    back = read_image(tmp_path / "lr.png")
    assert torch.equal(quantize_8bit(smooth), back) and torch.equal(Quantize8bit()(smooth), back)
    # Halves round to even, as torch.round and numpy.round do.
    halves = torch.tensor([0.5, 1.5, 2.5, 254.5], dtype=torch.float64) / 255
    assert to_uint8(halves).tolist() == [0, 2, 2, 254]
    assert quantize_8bit(smooth.double()).dtype == torch.float64
    with pytest.raises(ValueError, match="floating-point"):
        quantize_8bit(levels)
