"""Edge extractors: eq. 1-3 against a direct loop, Canny against OpenCV, the extractor interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from salightning.edges import (
    Canny,
    EdgeExtractor,
    LocalVariance,
    SobelMagnitude,
    canny,
    local_variance,
    sobel_magnitude,
)


def _centre_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    _, h, w = img.shape
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return img[:, top : top + size, left : left + size]


def _luminance_8bit(img: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> (H, W) BT.601 luminance rounded to 8-bit levels, 0..255 float."""
    return torch.round((0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]) * 255.0)


def _tolerant_f1(pred: torch.Tensor, ref: torch.Tensor) -> float:
    """Edge-pixel F1 with a 1-px tolerance: a predicted (reference) edge pixel counts when a
    reference (predicted) edge pixel lies in its 3x3 neighbourhood."""
    pred, ref = pred.float()[None, None], ref.float()[None, None]
    precision = (pred * F.max_pool2d(ref, 3, 1, 1)).sum() / pred.sum().clamp_min(1)
    recall = (ref * F.max_pool2d(pred, 3, 1, 1)).sum() / ref.sum().clamp_min(1)
    return float(2 * precision * recall / (precision + recall).clamp_min(1e-12))


def _local_variance_loop(x: np.ndarray, window_size: int, delta: float) -> np.ndarray:
    """Eq. 1-3 written out in float64, window by window, with reflect borders."""
    r = window_size // 2
    c, h, w = x.shape
    padded = np.pad(x.astype(np.float64), ((0, 0), (r, r), (r, r)), mode="reflect")
    out = np.empty((c, h, w))
    for k in range(c):
        for i in range(h):
            for j in range(w):
                window = padded[k, i : i + window_size, j : j + window_size]
                m = window.sum() / window.size  # eq. 2
                mu = ((window - m) ** 2).sum() / window.size  # eq. 1
                out[k, i, j] = mu / (mu + delta)  # eq. 3
    return out


# --- local variance -------------------------------------------------------------------------


@pytest.mark.parametrize("window_size, delta", [(3, 1.5e-3), (5, 1.5e-3), (7, 4e-3)])
def test_local_variance_matches_loop(photos, window_size, delta):
    crop = photos[0][:, 180:204, 240:268]  # astronaut: face edge, hair and flat skin, 24x28
    expected = _local_variance_loop(crop.numpy(), window_size, delta)
    got = local_variance(crop[None], window_size=window_size, delta=delta)[0]
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5, rtol=0)
    # the crop has both flat and edge pixels, so the check above covers both ends of eq. 3
    assert expected.min() < 0.1 and expected.max() > 0.9


def test_local_variance_range_flat_and_step():
    flat = torch.full((1, 3, 16, 16), 0.7)
    assert local_variance(flat).abs().max() < 1e-6
    step = torch.zeros(1, 1, 16, 16)
    step[..., 8:] = 1.0
    w = local_variance(step, window_size=5)[0, 0]
    assert w[:, 7:9].min() > 0.99  # the two columns on either side of the step
    assert w[:, :5].max() == 0 and w[:, 11:].max() == 0  # windows that do not reach the step


def test_local_variance_on_photos_follows_edges(photos):
    far_flagged = []
    for img in photos:
        crop = _centre_crop(img, 128)[None]
        w = LocalVariance()(crop)
        assert w.shape == crop.shape and w.min() >= 0 and w.max() < 1
        edges = canny(crop)[0, 0].bool()
        far = F.max_pool2d(edges.float()[None, None], 11, 1, 5)[0, 0] == 0  # > 5 px from an edge
        assert edges.any() and far.any()
        w_mean = w.mean(1)[0]
        # default delta: high on Canny edges, low away from them (fur and texture excepted)
        assert (w_mean[edges] > 0.5).float().mean() > 0.95
        far_flagged.append(float((w_mean[far] > 0.5).float().mean()))
    assert np.mean(far_flagged) < 0.1, far_flagged


def test_local_variance_module_matches_functional(photo_batch):
    module = LocalVariance(window_size=3, delta=2e-3)
    torch.testing.assert_close(module(photo_batch), local_variance(photo_batch, 3, 2e-3))


# --- Canny ----------------------------------------------------------------------------------


def test_canny_binary_and_broadcast(photo_batch):
    edges = Canny()(photo_batch)
    assert edges.shape == photo_batch.shape and edges.dtype == torch.float32
    assert set(edges.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(edges[:, :1].expand_as(edges), edges)
    density = edges[:, 0].mean(dim=(1, 2))
    assert (density > 0.005).all() and (density < 0.3).all()


def test_canny_rgb_equals_canny_of_opencv_grey(photo_batch):
    # grey input of the same 8-bit luminance (OpenCV's conversion) gives the same map, one channel
    cv2 = pytest.importorskip("cv2")
    img8 = (photo_batch * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    grey = torch.stack([torch.from_numpy(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)) for im in img8])[:, None] / 255.0
    edges = canny(photo_batch)
    grey_edges = canny(grey)
    assert grey_edges.shape == grey.shape
    assert torch.equal(grey_edges, edges[:, :1])


@pytest.mark.parametrize("low, high, l2_gradient", [(100.0, 200.0, False), (50.0, 150.0, False), (100.0, 200.0, True)])
def test_canny_matches_opencv(photos, low, high, l2_gradient):
    cv2 = pytest.importorskip("cv2")
    f1s, equal = [], []
    for img in photos:
        crop = _centre_crop(img, 256)
        y8 = _luminance_8bit(crop)
        ref = torch.from_numpy(cv2.Canny(y8.numpy().astype(np.uint8), low, high, L2gradient=l2_gradient) > 0)
        ours = canny((y8 / 255.0)[None, None], low, high, l2_gradient=l2_gradient)[0, 0] > 0
        f1s.append(_tolerant_f1(ours, ref))
        equal.append(float((ours == ref).float().mean()))
        # from RGB, against OpenCV's own grey conversion of the 8-bit image
        rgb8 = (crop * 255).round().permute(1, 2, 0).numpy().astype(np.uint8)
        ref_rgb = cv2.Canny(cv2.cvtColor(rgb8, cv2.COLOR_RGB2GRAY), low, high, L2gradient=l2_gradient) > 0
        ours_rgb = canny(crop[None], low, high, l2_gradient=l2_gradient)[0, 0] > 0
        equal.append(float((ours_rgb == torch.from_numpy(ref_rgb)).float().mean()))
    assert np.mean(f1s) >= 0.80, f1s
    # the port follows cv2.Canny's rules exactly, so it agrees pixel for pixel
    assert min(equal) == 1.0, equal


@pytest.mark.parametrize("seed", [0, 1])
def test_canny_on_saturated_colours_matches_opencv(seed):
    # random 8-bit colours reach every weighted sum range, bright ones included (a uint8 grey
    # conversion that wraps fails here), and put a gradient on nearly every pixel
    cv2 = pytest.importorskip("cv2")
    rgb8 = torch.randint(0, 256, (96, 96, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    ref = cv2.Canny(cv2.cvtColor(rgb8.numpy(), cv2.COLOR_RGB2GRAY), 100, 200) > 0
    ours = canny((rgb8.permute(2, 0, 1).float() / 255.0)[None])[0, 0] > 0
    assert ref.mean() > 0.05
    assert torch.equal(ours, torch.from_numpy(ref))


def test_canny_blur_lowers_agreement_with_opencv(photos):
    cv2 = pytest.importorskip("cv2")
    y8 = _luminance_8bit(_centre_crop(photos[1], 256))
    ref = torch.from_numpy(cv2.Canny(y8.numpy().astype(np.uint8), 100, 200) > 0)
    x = (y8 / 255.0)[None, None]
    plain = _tolerant_f1(canny(x)[0, 0], ref)
    blurred = _tolerant_f1(canny(x, blur_kernel_size=5, blur_sigma=1.0)[0, 0], ref)
    assert blurred < plain - 0.1


# --- Sobel ------------------------------------------------------------------------------------


def test_sobel_magnitude_range_and_step():
    step = torch.zeros(1, 1, 16, 16)
    step[..., 8:] = 1.0
    w = sobel_magnitude(step)[0, 0]
    assert w[:, 7:9].min() > 0.9 and w[:, :6].max() < 1e-4 and w.max() < 1
    torch.testing.assert_close(SobelMagnitude(delta=0.1)(step), sobel_magnitude(step, 0.1))


# --- the extractor interface --------------------------------------------------------------


@pytest.mark.parametrize("extractor", [LocalVariance(), Canny(), SobelMagnitude()], ids=["lv", "canny", "sobel"])
def test_no_grad_fp32_under_autocast(photo_batch, extractor):
    x = photo_batch[:2].clone().requires_grad_(True)
    plain = extractor(x)
    assert plain.dtype == torch.float32 and not plain.requires_grad
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = extractor(x)
    assert amp.dtype == torch.float32 and not amp.requires_grad
    torch.testing.assert_close(amp, plain)
    low_precision = extractor(photo_batch[:2].to(torch.bfloat16))
    assert low_precision.dtype == torch.float32 and low_precision.shape == x.shape


def test_functional_forms_are_differentiable(photo_batch):
    x = photo_batch[:1, :, :32, :32].clone().requires_grad_(True)
    (local_variance(x).sum() + sobel_magnitude(x).sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_custom_extractor_subclass(photo_batch):
    class MaxChannelGradient(EdgeExtractor):
        def compute(self, x):
            assert x.dtype == torch.float32 and not x.requires_grad and torch.is_grad_enabled() is False
            return sobel_magnitude(x).amax(dim=1, keepdim=True)  # (B, 1, H, W)

    x = photo_batch.to(torch.float64).requires_grad_(True)
    w = MaxChannelGradient()(x)
    assert w.shape == x.shape and w.dtype == torch.float32 and not w.requires_grad
    assert torch.equal(w[:, 0], w[:, 2]) and 0 <= w.min() and w.max() <= 1

    class WrongShape(EdgeExtractor):
        def compute(self, x):
            return x[..., :-1]

    with pytest.raises(RuntimeError, match="WrongShape.compute must return shape"):
        WrongShape()(photo_batch)
    with pytest.raises(NotImplementedError):
        EdgeExtractor()(photo_batch)


_SMALL = torch.linspace(0, 1, 3 * 8 * 8).reshape(1, 3, 8, 8)

_BAD_INPUTS = [
    ("x", "shape (3, 8, 8)", lambda: local_variance(_SMALL[0])),
    ("x", "torch.uint8", lambda: local_variance((_SMALL * 255).to(torch.uint8))),
    ("x", "8-bit", lambda: local_variance(_SMALL * 255)),
    ("x", "torch.Tensor", lambda: local_variance(_SMALL.numpy())),
    ("window_size", "4", lambda: local_variance(_SMALL, window_size=4)),
    ("window_size", "9", lambda: local_variance(_SMALL, window_size=9)),
    ("window_size", "0", lambda: LocalVariance(window_size=0)),
    ("window_size", "9", lambda: LocalVariance(window_size=9)(_SMALL)),
    ("delta", "0", lambda: local_variance(_SMALL, delta=0.0)),
    ("delta", "-0.1", lambda: LocalVariance(delta=-0.1)),
    ("x", "shape (3, 8, 8)", lambda: LocalVariance()(_SMALL[0])),
    ("low_threshold", "-1", lambda: canny(_SMALL, low_threshold=-1.0)),
    ("high_threshold", "-5", lambda: Canny(low_threshold=0.0, high_threshold=-5.0)),
    ("low_threshold", "200", lambda: canny(_SMALL, 200.0, 100.0)),
    ("low_threshold", "300", lambda: Canny(300.0, 200.0)),
    ("blur_kernel_size", "4", lambda: Canny(blur_kernel_size=4)),
    ("blur_sigma", "0", lambda: canny(_SMALL, blur_kernel_size=3, blur_sigma=0.0)),
    ("x", "channels", lambda: canny(_SMALL[:, :2])),
    ("x", "channels", lambda: Canny()(_SMALL[:, :2])),
    ("x", "8-bit", lambda: Canny()(_SMALL * 255)),
    ("delta", "0", lambda: sobel_magnitude(_SMALL, delta=0.0)),
    ("delta", "-1", lambda: SobelMagnitude(delta=-1.0)),
    ("x", "torch.int64", lambda: SobelMagnitude()(_SMALL.long())),
]


@pytest.mark.parametrize("name, value, call", _BAD_INPUTS, ids=[f"{n}-{v}" for n, v, _ in _BAD_INPUTS])
def test_bad_input_raises_value_error(name, value, call):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert name in message and value in message, message
