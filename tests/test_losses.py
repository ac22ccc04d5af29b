"""Distances (eq. 6, 7), SA pixel loss (eq. 8, 9, 12, 13), adversarial losses, TV and DCT loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F
from torch import nn

from salightning.losses import (
    AdversarialLoss,
    DCTPerceptualLoss,
    PixelLossParts,
    SAPixelLoss,
    TotalVariationLoss,
    WeightedCharbonnier,
    WeightedL1,
    block_dct,
    dct_matrix,
    dct_perceptual_loss,
    gan_discriminator_fake_loss,
    gan_discriminator_loss,
    gan_discriminator_real_loss,
    gan_generator_loss,
    jpeg_frequency_weights,
    total_variation,
    weighted_charbonnier,
    weighted_distance,
    weighted_l1,
)


def make_edge_extractor() -> nn.Module:
    """The real local-variance extractor (eq. 1-3)."""
    from salightning.edges import LocalVariance

    return LocalVariance()


def degrade(hr: torch.Tensor) -> torch.Tensor:
    """A plausible SR output: the photo downscaled x2 and upscaled back (blurred edges)."""
    lr = F.interpolate(hr, scale_factor=0.5, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(lr, size=hr.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)


@pytest.fixture(scope="module")
def hr(photo_batch) -> torch.Tensor:
    """(2, 3, 48, 48) crops of real photos."""
    return photo_batch[:2, :, 40:88, 40:88].contiguous()


# ---------------------------------------------------------------- distances (eq. 6, 7)
U = torch.tensor([[[[0.2, 0.9], [0.5, 0.1]]], [[[1.0, 0.0], [0.3, 0.3]]]])  # (2, 1, 2, 2)
V = torch.tensor([[[[0.1, 0.5], [0.5, 0.7]]], [[[0.0, 0.2], [0.3, 0.6]]]])
H = torch.tensor([[[[1.0, 2.0], [0.0, 0.5]]], [[[3.0, 1.0], [1.0, 0.0]]]])


def by_hand(rho, h=H) -> float:
    total = 0.0
    for b in range(2):
        for i in range(2):
            for j in range(2):
                total += float(h[b, 0, i, j]) * rho(float(U[b, 0, i, j]) - float(V[b, 0, i, j]))
    return total / 8


def test_weighted_l1_by_hand():
    assert weighted_l1(U, V, H).item() == pytest.approx(by_hand(abs), rel=1e-6)
    assert WeightedL1()(U, V, H).item() == pytest.approx(by_hand(abs), rel=1e-6)
    # Not normalised by sum(h): doubling h doubles the loss.
    assert weighted_l1(U, V, 2 * H).item() == pytest.approx(2 * by_hand(abs), rel=1e-6)


@pytest.mark.parametrize("eps", [1e-3, 0.25])
def test_weighted_charbonnier_by_hand(eps):
    expected = by_hand(lambda d: math.sqrt(d * d + eps * eps))
    assert weighted_charbonnier(U, V, H, eps=eps).item() == pytest.approx(expected, rel=1e-6)
    assert WeightedCharbonnier(eps)(U, V, H).item() == pytest.approx(expected, rel=1e-6)
    # eps is epsilon itself (not epsilon squared): identical inputs give eps * mean(h).
    assert weighted_charbonnier(U, U, H, eps=eps).item() == pytest.approx(eps * H.mean().item(), rel=1e-6)


def test_constant_weight_is_basicsr_l1_with_loss_weight(hr):
    sr = degrade(hr)
    assert weighted_l1(sr, hr, 0.01).item() == pytest.approx(0.01 * F.l1_loss(sr, hr).item(), rel=1e-6)


def test_weight_broadcasts_over_channels(hr):
    sr = degrade(hr)
    h = hr.mean(1, keepdim=True)  # (B, 1, H, W)
    assert torch.allclose(weighted_l1(sr, hr, h), weighted_l1(sr, hr, h.expand_as(hr)))
    assert torch.allclose(weighted_distance(sr, hr, h, "charbonnier"), weighted_charbonnier(sr, hr, h.expand_as(hr)))


def test_half_precision_charbonnier_is_computed_in_float32(hr):
    sr = degrade(hr)
    out = weighted_charbonnier(sr.half(), hr.half(), 1.0)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(weighted_charbonnier(sr.half().float(), hr.half().float()).item(), rel=1e-6)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: weighted_l1(U, V[:, :, :1], H), "u and v"),
        (lambda: weighted_l1(U, V, torch.ones(2, 2, 2, 2)), "h must broadcast"),
        (lambda: weighted_l1(U, V, torch.ones(3, 2, 1, 2, 2)), r"h must broadcast.*\(3, 2, 1, 2, 2\)"),
        (lambda: weighted_l1(U, V, -1.0), r"h must be >= 0, got -1.0"),
        (lambda: weighted_l1(U.long(), V, H), "u must be a floating-point"),
        (lambda: weighted_l1(U, V, H.long()), "h must be a floating-point"),
        (lambda: weighted_l1([1.0], V, H), "u must be a torch.Tensor"),
        (lambda: weighted_charbonnier(U, V, H, eps=0.0), r"eps must be > 0, got 0.0"),
        (lambda: weighted_charbonnier(U, V, H, eps=-1e-3), r"eps must be > 0, got -0.001"),
        (lambda: weighted_distance(U, V, H, "l2"), "distance must be 'l1', 'charbonnier' or 'mse', got 'l2'"),
        (lambda: WeightedCharbonnier(eps=0), "eps must be > 0"),
    ],
)
def test_distance_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- SA pixel loss (eq. 8, 9, 12, 13)
@pytest.mark.parametrize("distance", ["l1", "charbonnier"])
def test_sa_pixel_loss_decomposition(hr, distance):
    loss = SAPixelLoss(beta1=0.01, beta2=20.0, edge_extractor=make_edge_extractor(), distance=distance)
    sr = degrade(hr)
    value = loss(sr, hr)
    assert isinstance(value, torch.Tensor) and value.shape == ()
    out = loss.parts(sr, hr)
    assert isinstance(out, PixelLossParts)
    w = loss.edge_map(hr)
    assert w.shape == hr.shape and w.dtype == torch.float32 and not w.requires_grad
    assert w.min() >= 0 and w.max() <= 1 and w.max() > 0.5  # real photos have edges
    torch.testing.assert_close(out.total, out.plain + out.sa)
    torch.testing.assert_close(out.total, value)
    torch.testing.assert_close(out.sa, 20.0 * out.sa_unit)
    # Eq. 12 / 13: one weighted distance with H = beta1 * 1 + beta2 * W(hr).
    torch.testing.assert_close(value, weighted_distance(sr, hr, 0.01 + 20.0 * w, distance))
    torch.testing.assert_close(out.plain, weighted_distance(sr, hr, 0.01, distance))
    torch.testing.assert_close(out.sa_unit, weighted_distance(sr, hr, w, distance))
    # The edge term is larger than the plain one: the degradation hurts the edges most.
    assert out.sa_unit > 0.3 * out.plain / 0.01


def test_sa_pixel_loss_beta2_zero_is_plain_l1(hr):
    sr = degrade(hr)
    loss = SAPixelLoss(beta1=0.5, beta2=0.0, edge_extractor=make_edge_extractor())
    out = loss.parts(sr, hr)
    torch.testing.assert_close(loss(sr, hr), 0.5 * F.l1_loss(sr, hr))
    torch.testing.assert_close(out.plain, out.total)
    assert out.sa.item() == 0.0
    assert out.sa_unit.item() > 0  # still measured, for calibrating beta2


def test_sa_pixel_loss_without_extractor_uses_given_edge_map(hr):
    sr = degrade(hr)
    loss = SAPixelLoss(beta1=1.0, beta2=2.0)
    out = loss.parts(sr, hr)
    assert loss.edge_map(hr) is None
    torch.testing.assert_close(loss(sr, hr), F.l1_loss(sr, hr))
    assert out.sa.item() == 0.0 and out.sa_unit.item() == 0.0
    w1 = hr.mean(1, keepdim=True)  # (B, 1, H, W), shared by the channels
    torch.testing.assert_close(loss(sr, hr, edge_map=w1), weighted_l1(sr, hr, 1.0 + 2.0 * w1.expand_as(hr)))
    for call in (loss, loss.parts):
        with pytest.raises(ValueError, match="edge_map must broadcast"):
            call(sr, hr, edge_map=w1[..., :-1])


def test_sa_pixel_loss_gradients_reach_sr_only(hr):
    loss = SAPixelLoss(beta1=0.01, beta2=20.0, edge_extractor=make_edge_extractor(), distance="charbonnier")
    sr = degrade(hr).requires_grad_(True)
    target = hr.clone().requires_grad_(True)
    w_given = hr.mean(1, keepdim=True).requires_grad_(True)
    d = sr.detach() - hr
    for edge_map, w in ((None, loss.edge_map(hr)), (w_given, w_given.detach())):
        sr.grad = None
        loss(sr, target, edge_map=edge_map).backward()
        assert target.grad is None and w_given.grad is None
        # d/d sr of mean((beta1 + beta2 W) sqrt(d^2 + eps^2)): edge pixels weigh up to 2000x more.
        torch.testing.assert_close(sr.grad, (0.01 + 20.0 * w) * d / torch.sqrt(d * d + 1e-6) / d.numel())
    assert not loss.edge_map(target).requires_grad


def test_sa_pixel_loss_beta2_buffer(hr):
    loss = SAPixelLoss(beta1=1.0, beta2=0.0, edge_extractor=make_edge_extractor())
    assert loss.beta2.dtype == torch.float32 and "beta2" in loss.state_dict()
    loss.set_beta2(17.3)
    assert loss.beta2.item() == pytest.approx(17.3)
    loss.half()
    assert loss.beta2.dtype == torch.float32 and loss.beta2.item() == pytest.approx(17.3)
    restored = SAPixelLoss(beta1=1.0, beta2=0.0, edge_extractor=make_edge_extractor())
    restored.load_state_dict(loss.state_dict())
    assert restored.beta2.item() == pytest.approx(17.3)
    sr = degrade(hr)
    torch.testing.assert_close(restored.parts(sr, hr).sa, 17.3 * restored.parts(sr, hr).sa_unit)


def test_sa_pixel_loss_loads_the_buffer_of_old_checkpoints():
    # Checkpoints written before the rename name the buffer "beta".
    restored = SAPixelLoss(beta1=1.0, beta2=0.0)
    restored.load_state_dict({"beta": torch.tensor(3.5)})
    assert restored.beta2.item() == 3.5


def test_sa_pixel_loss_old_names_still_work_with_a_deprecation_warning(hr):
    sr = degrade(hr)
    new = SAPixelLoss(beta1=0.01, beta2=20.0, edge_extractor=make_edge_extractor())
    with pytest.warns(DeprecationWarning, match="use beta1"):
        old = SAPixelLoss(alpha=0.01, beta=20.0, edge_extractor=make_edge_extractor())
    assert old.beta1 == 0.01 and old.beta2.item() == 20.0
    torch.testing.assert_close(old(sr, hr), new(sr, hr))
    with pytest.warns(DeprecationWarning, match="use set_beta2"):
        old.set_beta(2.0)
    with pytest.warns(DeprecationWarning, match="use beta2"):
        assert old.beta.item() == 2.0
    with pytest.raises(ValueError, match="beta1 or its deprecated name alpha, not both"):
        SAPixelLoss(beta1=0.1, alpha=0.2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta1": -0.1}, r"beta1 must be >= 0, got -0.1"),
        ({"beta2": -2.0}, r"beta2 must be >= 0, got -2.0"),
        ({"beta2": float("inf")}, r"beta2 must be finite"),
        ({"alpha": -0.1}, r"alpha must be >= 0, got -0.1"),
        ({"beta": float("inf")}, r"beta must be finite"),
        ({"distance": "charbonnier", "eps": 0.0}, r"eps must be > 0, got 0.0"),
        ({"distance": "huber"}, r"distance must be 'l1', 'charbonnier' or 'mse', got 'huber'"),
    ],
)
def test_sa_pixel_loss_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SAPixelLoss(**kwargs)


def test_sa_pixel_loss_bad_inputs(hr):
    loss = SAPixelLoss()
    with pytest.raises(ValueError, match=r"beta2 must be >= 0, got -1.0"):
        loss.set_beta2(-1.0)
    with pytest.raises(ValueError, match="sr and hr must have the same shape"):
        loss(hr[:, :, :-1], hr)
    with pytest.raises(ValueError, match="sr must have 4 dimensions"):
        loss(hr[0], hr[0])
    with pytest.raises(ValueError, match="hr must be a floating-point"):
        loss(hr, (hr * 255).to(torch.uint8))


# ---------------------------------------------------------------- adversarial
REAL = torch.tensor([[2.0], [0.5], [-1.0]])
FAKE = torch.tensor([[-1.5], [0.3], [1.2]])


def log_sigmoid(z: float) -> float:
    return -math.log1p(math.exp(-z))


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def test_vanilla_by_hand():
    # Eq. 14: D maximises log D(x) + log(1 - D(G(y))); G minimises -log D(G(y)).
    g = mean(-log_sigmoid(f) for f in FAKE.flatten().tolist())
    d_real = mean(-log_sigmoid(r) for r in REAL.flatten().tolist())
    d_fake = mean(-math.log(1 - 1 / (1 + math.exp(-f))) for f in FAKE.flatten().tolist())
    assert gan_generator_loss(FAKE).item() == pytest.approx(g, rel=1e-5)
    assert gan_discriminator_real_loss(REAL).item() == pytest.approx(d_real, rel=1e-5)
    assert gan_discriminator_fake_loss(FAKE).item() == pytest.approx(d_fake, rel=1e-5)
    assert gan_discriminator_loss(REAL, FAKE).item() == pytest.approx(d_real + d_fake, rel=1e-5)


def test_relativistic_by_hand():
    r, f = REAL.flatten().tolist(), FAKE.flatten().tolist()
    mr, mf = mean(r), mean(f)
    # ESRGAN / BasicSR: G = (BCE(r - E f, 0) + BCE(f - E r, 1)) / 2.
    g = (mean(-math.log(1 - math.exp(log_sigmoid(x - mf))) for x in r) + mean(-log_sigmoid(x - mr) for x in f)) / 2
    assert gan_generator_loss(FAKE, REAL, "relativistic").item() == pytest.approx(g, rel=1e-5)
    d_real = gan_discriminator_real_loss(REAL, FAKE, "relativistic")
    d_fake = gan_discriminator_fake_loss(FAKE, REAL, "relativistic")
    standard = 0.5 * (
        F.binary_cross_entropy_with_logits(REAL - FAKE.mean(), torch.ones_like(REAL))
        + F.binary_cross_entropy_with_logits(FAKE - REAL.mean(), torch.zeros_like(FAKE))
    )
    torch.testing.assert_close(d_real + d_fake, standard)
    assert d_real.item() == pytest.approx(0.5 * mean(-log_sigmoid(x - mf) for x in r), rel=1e-5)
    torch.testing.assert_close(gan_discriminator_loss(REAL, FAKE, "relativistic"), standard)


def test_relativistic_detaches_the_other_side():
    real = REAL.clone().requires_grad_(True)
    fake = FAKE.clone().requires_grad_(True)
    gan_discriminator_real_loss(real, fake, "relativistic").backward()
    assert real.grad is not None and fake.grad is None
    real.grad = None
    gan_generator_loss(fake, real, "relativistic").backward()
    assert fake.grad is not None and real.grad is None


def test_hinge_and_lsgan_by_hand():
    r, f = REAL.flatten().tolist(), FAKE.flatten().tolist()
    assert gan_generator_loss(FAKE, kind="hinge").item() == pytest.approx(-mean(f), abs=1e-6)
    assert gan_generator_loss(REAL, kind="hinge").item() == pytest.approx(-0.5)
    assert gan_discriminator_real_loss(REAL, kind="hinge").item() == pytest.approx(mean(max(0, 1 - x) for x in r))
    assert gan_discriminator_fake_loss(FAKE, kind="hinge").item() == pytest.approx(mean(max(0, 1 + x) for x in f))
    assert gan_discriminator_real_loss(REAL, kind="hinge").item() == pytest.approx((0 + 0.5 + 2.0) / 3)
    assert gan_generator_loss(FAKE, kind="lsgan").item() == pytest.approx(mean((x - 1) ** 2 for x in f))
    assert gan_discriminator_real_loss(REAL, kind="lsgan").item() == pytest.approx(mean((x - 1) ** 2 for x in r))
    assert gan_discriminator_fake_loss(FAKE, kind="lsgan").item() == pytest.approx(mean(x * x for x in f))


@pytest.mark.parametrize("kind", ["vanilla", "relativistic", "hinge", "lsgan"])
def test_adversarial_module_matches_functions(kind):
    loss = AdversarialLoss(kind)
    torch.testing.assert_close(loss(FAKE, REAL), gan_generator_loss(FAKE, REAL, kind))
    torch.testing.assert_close(loss.discriminator_real_loss(REAL, FAKE), gan_discriminator_real_loss(REAL, FAKE, kind))
    torch.testing.assert_close(loss.discriminator_fake_loss(FAKE, REAL), gan_discriminator_fake_loss(FAKE, REAL, kind))
    torch.testing.assert_close(
        loss.discriminator_loss(REAL, FAKE),
        loss.discriminator_real_loss(REAL, FAKE) + loss.discriminator_fake_loss(FAKE, REAL),
    )
    # A discriminator that is right (real +1, fake -1) has a lower loss than one that is wrong,
    # and then the generator's loss is higher.
    right, wrong = torch.ones(3, 1), -torch.ones(3, 1)
    assert loss.discriminator_loss(right, wrong) < loss.discriminator_loss(wrong, right)
    assert loss.generator_loss(wrong, right) > loss.generator_loss(right, wrong)


def test_adversarial_bad_input():
    with pytest.raises(ValueError, match="kind must be one of"):
        AdversarialLoss("wgan")
    with pytest.raises(ValueError, match="real_logits is required by the relativistic loss"):
        AdversarialLoss("relativistic").generator_loss(FAKE)
    with pytest.raises(ValueError, match="fake_logits is required by the relativistic loss"):
        gan_discriminator_real_loss(REAL, None, "relativistic")
    with pytest.raises(ValueError, match="fake_logits must be a floating-point"):
        gan_generator_loss(FAKE.long())


# ---------------------------------------------------------------- total variation
def test_total_variation_by_hand():
    x = torch.tensor([[[[0.0, 1.0, 3.0], [2.0, 2.0, 0.0]]]])  # (1, 1, 2, 3)
    # Forward differences, 0 past the last row / column; L2 norm per pixel; mean over 6 pixels.
    norms = [
        math.hypot(1 - 0, 2 - 0), math.hypot(3 - 1, 2 - 1), math.hypot(0, 0 - 3),
        math.hypot(2 - 2, 0), math.hypot(0 - 2, 0), math.hypot(0, 0),
    ]  # fmt: skip
    assert total_variation(x).item() == pytest.approx(sum(norms) / 6, rel=1e-6)
    assert TotalVariationLoss()(x).item() == pytest.approx(sum(norms) / 6, rel=1e-6)


def test_total_variation_on_photos(hr):
    assert total_variation(torch.full_like(hr, 0.3)).item() == 0.0
    assert total_variation(degrade(hr)) < total_variation(hr)  # blurring lowers TV
    flat = torch.full_like(hr, 0.5).requires_grad_(True)
    total_variation(flat).backward()  # zero gradient vectors: subgradient 0, not NaN
    assert torch.isfinite(flat.grad).all()
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        total_variation(hr[0])


# ---------------------------------------------------------------- DCT perceptual loss
def test_dct_matrix_is_orthonormal_dct_ii(photos):
    d = dct_matrix(8, torch.float64)
    torch.testing.assert_close(d @ d.T, torch.eye(8, dtype=torch.float64))
    x = photos[1][:, :32, :48].unsqueeze(0).double()
    coeffs = block_dct(x)
    assert coeffs.shape == (1, 3, 4, 6, 8, 8)
    block = x[0, 2, 8:16, 40:48].numpy()
    np.testing.assert_allclose(coeffs[0, 2, 1, 5].numpy(), scipy.fft.dctn(block, norm="ortho"), atol=1e-12)
    # Parseval: the orthonormal transform keeps the energy.
    torch.testing.assert_close(coeffs.square().sum(), x.square().sum())


def test_jpeg_weights_favour_low_frequencies():
    w = jpeg_frequency_weights("y")[0, 0, 0]
    assert w.mean().item() == pytest.approx(1.0)
    assert w[0, 0] > 2 * w[7, 7] and w[0, 1] > w[6, 7]
    chroma = jpeg_frequency_weights("ycbcr")
    assert chroma.shape == (3, 1, 1, 8, 8) and chroma[1].mean() < chroma[0].mean()


def test_dct_loss_weights_errors_by_frequency(hr):
    d = dct_matrix(8)
    hr32 = hr[:, :, :32, :32]
    errors = []
    for u, v in ((0, 1), (7, 7)):
        # The same pixel-domain energy, put on one DCT frequency in every 8x8 block of Y.
        pattern = 0.05 * torch.outer(d[u], d[v]).repeat(4, 4)
        errors.append(dct_perceptual_loss(hr32 + pattern, hr32).item())
    w = jpeg_frequency_weights("y")[0, 0, 0]
    # The luminance of a grey offset (same on R, G, B) is the offset itself.
    assert errors[0] / errors[1] == pytest.approx((w[0, 1] / w[7, 7]).item(), rel=1e-3)


@pytest.mark.parametrize("color", ["y", "ycbcr", "rgb"])
def test_dct_loss_zero_for_identical_positive_otherwise(hr, color):
    loss = DCTPerceptualLoss(color)
    assert loss(hr, hr.clone()).item() == 0.0
    sr = degrade(hr).requires_grad_(True)
    value = loss(sr, hr)
    assert value > 0
    torch.testing.assert_close(value, dct_perceptual_loss(sr, hr, color))
    value.backward()
    assert sr.grad.abs().sum() > 0
    # Sides that are not multiples of 8 are padded, every pixel counts.
    odd = loss(sr[..., :45, :43], hr[..., :45, :43])
    assert odd > 0


def test_dct_loss_bad_input(hr):
    with pytest.raises(ValueError, match="color must be"):
        DCTPerceptualLoss("lab")
    with pytest.raises(ValueError, match=r"eps must be > 0, got 0"):
        DCTPerceptualLoss(distance="charbonnier", eps=0)
    with pytest.raises(ValueError, match="sr and hr must have the same shape"):
        dct_perceptual_loss(hr[..., :40], hr)
    with pytest.raises(ValueError, match="sr must have 3 channels"):
        dct_perceptual_loss(hr[:, :2], hr[:, :2], color="ycbcr")
    with pytest.raises(ValueError, match="multiples of 8"):
        block_dct(hr[..., :30, :32])
