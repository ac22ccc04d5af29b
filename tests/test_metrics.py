"""Metrics against independent float64 numpy/scipy implementations of the published formulas."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from scipy.signal import convolve2d

from salightning import metrics
from salightning.metrics import LPIPS, SRMetrics, edge_psnr, flat_psnr, psnr, rgb_to_y, ssim
from salightning.weights import MissingWeightsError

# ----------------------------------------------------------------------------- references


def ref_prepare(x: torch.Tensor, crop: int, y: bool) -> np.ndarray:
    """(C,H,W) tensor in [0,1] -> (C',H',W') float64 on 0..255: 8-bit, cropped, MATLAB Y."""
    a = np.rint(np.clip(x.numpy().astype(np.float64), 0.0, 1.0) * 255.0)
    if crop:
        a = a[:, crop:-crop, crop:-crop]
    if y:
        a = (16.0 + (65.481 * a[0] + 128.553 * a[1] + 24.966 * a[2]) / 255.0)[None]
    return a


def ref_psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10.0 * np.log10(255.0**2 / np.mean((a - b) ** 2))


def ref_ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    r = np.arange(11) - 5.0
    g = np.exp(-(r**2) / (2 * 1.5**2))
    g /= g.sum()
    win = np.outer(g, g)

    def filt(z):
        return convolve2d(z, win, mode="valid")

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def ref_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([ref_ssim_channel(a[c], b[c]) for c in range(a.shape[0])]))


# ----------------------------------------------------------------------------- degradations


def bicubic_x4(x: torch.Tensor) -> torch.Tensor:
    """Down-then-up bicubic (overshoots outside [0, 1]: the metrics must clamp)."""
    lr = F.interpolate(x[None], scale_factor=0.25, mode="bicubic", antialias=True)
    return F.interpolate(lr, size=x.shape[-2:], mode="bicubic", align_corners=False)[0]


def jpeg(x: torch.Tensor, quality: int = 25) -> torch.Tensor:
    arr = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return torch.from_numpy(out.copy()).permute(2, 0, 1).float() / 255.0


def crop_photo(p: torch.Tensor, h: int = 120, w: int = 152) -> torch.Tensor:
    """Centre crop (sizes are multiples of 4 for the x4 round trip, not square)."""
    top, left = (p.shape[1] - h) // 2, (p.shape[2] - w) // 2
    return p[:, top : top + h, left : left + w].contiguous()


@pytest.fixture(scope="module")
def pairs(photos):
    """(sr, hr) pairs of real photo crops with realistic degradations, as (1, 3, H, W) tensors."""
    out = []
    for i, p in enumerate(photos[:4]):
        hr = crop_photo(p)
        out.append((bicubic_x4(hr), hr))
        if i < 2:
            out.append((jpeg(hr), hr))
    return out


# ----------------------------------------------------------------------------- rgb_to_y


def test_rgb_to_y_matlab_values():
    x = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    y = rgb_to_y(x.T.reshape(1, 3, 1, 5))
    assert y.shape == (1, 1, 1, 5)
    expected = torch.tensor([235.0, 16.0, 16 + 65.481, 16 + 128.553, 16 + 24.966]) / 255.0
    torch.testing.assert_close(y.flatten(), expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="x must have 3 channels"):
        rgb_to_y(torch.zeros(1, 1, 4, 4))


# ----------------------------------------------------------------------------- PSNR / SSIM


@pytest.mark.parametrize("y_channel", [False, True])
@pytest.mark.parametrize("crop_border", [0, 4])
def test_psnr_ssim_match_published_formulas(pairs, y_channel, crop_border):
    for sr, hr in pairs:
        a, b = ref_prepare(sr, crop_border, y_channel), ref_prepare(hr, crop_border, y_channel)
        p = psnr(sr[None], hr[None], crop_border=crop_border, y_channel=y_channel)
        s = ssim(sr[None], hr[None], crop_border=crop_border, y_channel=y_channel)
        assert p.shape == (1,) and s.shape == (1,) and p.dtype == torch.float64
        assert abs(p.item() - ref_psnr(a, b)) < 0.01
        assert abs(s.item() - ref_ssim(a, b)) < 1e-4
        assert 15 < p.item() < 50 and 0.3 < s.item() < 1.0  # a real degradation, not a trivial case


def test_values_per_image_in_a_batch(pairs):
    sr = torch.stack([pairs[0][0], pairs[2][0], pairs[3][0]])
    hr = torch.stack([pairs[0][1], pairs[2][1], pairs[3][1]])
    for fn in (psnr, ssim):
        batch = fn(sr, hr, crop_border=4, y_channel=True)
        single = torch.cat([fn(sr[i : i + 1], hr[i : i + 1], crop_border=4, y_channel=True) for i in range(3)])
        assert batch.shape == (3,)
        torch.testing.assert_close(batch, single, rtol=0, atol=1e-12)
        assert len(set(batch.tolist())) == 3


def test_ssim_agrees_with_skimage(pairs):
    structural_similarity = pytest.importorskip("skimage.metrics").structural_similarity
    sr, hr = pairs[0]
    for y in (False, True):
        a, b = ref_prepare(sr, 4, y), ref_prepare(hr, 4, y)
        # skimage filters the whole image (reflect padding) and then drops (win - 1) / 2 = 5
        # pixels per side before averaging: exactly the valid region of the 11x11 window.
        expected = structural_similarity(
            a, b, channel_axis=0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
        )
        got = ssim(sr[None], hr[None], crop_border=4, y_channel=y).item()
        assert abs(got - expected) < 1e-6


def test_rounding_and_clamping_like_8bit_pngs(pairs):
    sr, hr = pairs[0]
    assert sr.min() < 0 or sr.max() > 1  # bicubic overshoot
    sr8 = (sr.clamp(0, 1) * 255).round() / 255
    torch.testing.assert_close(psnr(sr[None], hr[None]), psnr(sr8[None], hr[None]), rtol=0, atol=0)
    torch.testing.assert_close(ssim(sr[None], hr[None]), ssim(sr8[None], hr[None]), rtol=0, atol=0)
    # float64 input gives the same numbers
    torch.testing.assert_close(psnr(sr[None].double(), hr[None].double()), psnr(sr[None], hr[None]))


def test_identical_and_grey_images(photo_batch):
    assert torch.isinf(psnr(photo_batch, photo_batch)).all()
    torch.testing.assert_close(ssim(photo_batch, photo_batch), torch.ones(4, dtype=torch.float64))
    grey = photo_batch.mean(dim=1, keepdim=True)
    degraded = torch.stack([bicubic_x4(g) for g in grey])
    ref = [ref_psnr(ref_prepare(d, 2, False), ref_prepare(g, 2, False)) for d, g in zip(degraded, grey)]
    torch.testing.assert_close(psnr(degraded, grey, crop_border=2), torch.tensor(ref, dtype=torch.float64), rtol=0, atol=0.01)
    assert ssim(degraded, grey, crop_border=2).shape == (4,)


def test_bad_inputs(photo_batch):
    x = photo_batch
    with pytest.raises(ValueError, match="sr must have 4 dimensions"):
        psnr(x[0], x[0])
    with pytest.raises(ValueError, match="hr must have 3 channels"):
        psnr(x, x[:, :1], y_channel=True)
    with pytest.raises(ValueError, match="sr must have 1 or 3 channels"):
        ssim(x[:, :2], x[:, :2])
    with pytest.raises(ValueError, match="sr and hr must have the same shape"):
        ssim(x, x[..., :64])
    with pytest.raises(ValueError, match="crop_border must be >= 0"):
        psnr(x, x, crop_border=-1)
    with pytest.raises(ValueError, match="crop_border must be an int"):
        psnr(x, x, crop_border=2.0)
    with pytest.raises(ValueError, match="crop_border=59 leaves 10x10"):
        ssim(x, x, crop_border=59)
    assert ssim(x, x, crop_border=58).shape == (4,)  # 12x12 left: fine
    with pytest.raises(ValueError, match="sr must have values in"):
        psnr(x * 255, x)
    with pytest.raises(ValueError, match="floating-point"):
        psnr((x * 255).to(torch.uint8), x)
    with pytest.raises(ValueError, match="y_channel must be a bool"):
        psnr(x, x, y_channel=1)


# ----------------------------------------------------------------------------- edge metrics


def threshold_edges(hr: torch.Tensor) -> torch.Tensor:
    """A simple (N,1,H,W) {0,1} edge map: gradient magnitude of the grey image above a threshold."""
    g = hr.mean(dim=1, keepdim=True)
    gx = F.pad(g[..., :, 1:] - g[..., :, :-1], (0, 1, 0, 0))
    gy = F.pad(g[..., 1:, :] - g[..., :-1, :], (0, 0, 0, 1))
    return ((gx.abs() + gy.abs()) > 0.08).float()


def test_edge_and_flat_psnr(photo_batch):
    hr = photo_batch
    sr = torch.stack([bicubic_x4(h) for h in hr])
    for y in (False, True):
        p = psnr(sr, hr, crop_border=4, y_channel=y)
        ones = torch.ones_like(hr[:, :1])
        torch.testing.assert_close(edge_psnr(sr, hr, ones, crop_border=4, y_channel=y), p, rtol=0, atol=1e-9)
        torch.testing.assert_close(flat_psnr(sr, hr, 0 * ones, crop_border=4, y_channel=y), p, rtol=0, atol=1e-9)
        assert torch.isnan(edge_psnr(sr, hr, 0 * ones, y_channel=y)).all()

    w = threshold_edges(hr)
    assert 0.02 < w.mean() < 0.6
    e, f = edge_psnr(sr, hr, w, crop_border=4), flat_psnr(sr, hr, w, crop_border=4)
    for i in range(4):
        a, b = ref_prepare(sr[i], 4, False), ref_prepare(hr[i], 4, False)
        wi = np.broadcast_to(w[i, :, 4:-4, 4:-4].numpy().astype(np.float64), a.shape)
        err = (a - b) ** 2
        assert abs(e[i].item() - 10 * np.log10(255**2 * wi.sum() / (wi * err).sum())) < 1e-6
        assert abs(f[i].item() - 10 * np.log10(255**2 * (1 - wi).sum() / ((1 - wi) * err).sum())) < 1e-6
    # bicubic blurs edges: the error concentrates there
    assert (e < f - 3).all()

    # a per-channel map on Y is averaged over channels; identical channels give the 1-channel result
    torch.testing.assert_close(
        edge_psnr(sr, hr, w.expand(-1, 3, -1, -1), y_channel=True), edge_psnr(sr, hr, w, y_channel=True)
    )
    with pytest.raises(ValueError, match="edge_map must have values in"):
        edge_psnr(sr, hr, 2 * w)
    with pytest.raises(ValueError, match="edge_map must have shape"):
        flat_psnr(sr, hr, w[:, :, :64])
    with pytest.raises(ValueError, match="edge_map must have 1 or 3 channels"):
        flat_psnr(sr, hr, w.expand(-1, 2, -1, -1))


# ----------------------------------------------------------------------------- LPIPS


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """Randomly initialised torchvision backbones saved as torchvision would (full state dicts)."""
    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    files = {}
    for arch in ("alexnet", "squeezenet1_1"):
        files[arch] = d / f"{arch}.pth"
        torch.save(getattr(torchvision.models, arch)().state_dict(), files[arch])
    # VGG16's 500 MB classifier is never used by LPIPS: save the convolutional part only.
    files["vgg16"] = d / "vgg16.pth"
    features = torchvision.models.vgg16().features.state_dict()
    torch.save({f"features.{k}": v for k, v in features.items()}, files["vgg16"])
    return files


@pytest.fixture()
def no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    # torchvision's weight enums call their own import of it
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", refuse, raising=False)


@pytest.fixture(scope="module")
def alex_lpips(weight_files):
    return LPIPS("alex", backbone_weights=str(weight_files["alexnet"]))


def test_lpips_loads_given_weights_without_download(weight_files, no_download, photo_batch):
    m = LPIPS("alex", backbone_weights=str(weight_files["alexnet"]))
    saved = torch.load(weight_files["alexnet"], weights_only=True)
    net = m.network
    torch.testing.assert_close(getattr(net.net.slice1, "0").weight, saved["features.0.weight"], rtol=0, atol=0)
    torch.testing.assert_close(getattr(net.net.slice5, "10").bias, saved["features.10.bias"], rtol=0, atol=0)
    heads = torch.load(metrics._lpips_linear_file("alex"), map_location="cpu", weights_only=True)
    torch.testing.assert_close(net.lin3.model[1].weight, heads["lin3.model.1.weight"], rtol=0, atol=0)
    assert not net.training and not any(p.requires_grad for p in net.parameters())

    for net, arch, layer in (("squeeze", "squeezenet1_1", "slice7.12.expand3x3"), ("vgg", "vgg16", "slice5.28")):
        m = LPIPS(net, backbone_weights=str(weight_files[arch]))
        saved = torch.load(weight_files[arch], weights_only=True)
        own = m.network.net.state_dict()[f"{layer}.weight"]
        torch.testing.assert_close(own, saved[f"features.{layer.split('.', 1)[1]}.weight"], rtol=0, atol=0)
        d = m(photo_batch[:2], photo_batch[2:])
        assert d.shape == (2,) and (d > 0).all()


def test_lpips_values(alex_lpips, photo_batch):
    hr = photo_batch
    sr = torch.stack([bicubic_x4(h) for h in hr])  # overshoots [0, 1]: clamped
    d = alex_lpips(sr, hr)
    assert d.shape == (4,) and d.dtype == torch.float32
    assert (d > 0).all()
    assert torch.equal(alex_lpips(hr, hr), torch.zeros(4))
    torch.testing.assert_close(alex_lpips(sr, hr), alex_lpips(sr.clamp(0, 1), hr))
    with pytest.raises(ValueError, match="sr must have 3 channels"):
        alex_lpips(hr[:, :1], hr[:, :1])
    with pytest.raises(ValueError, match="sr and hr must have the same shape"):
        alex_lpips(hr, hr[..., :64])


def test_lpips_missing_weights(tmp_path, monkeypatch, weight_files, no_download):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth") as err:
        LPIPS("alex")
    assert "backbone_weights" in str(err.value)
    with pytest.raises(MissingWeightsError, match=r"backbone_weights='.*nope\.pth'"):
        LPIPS("vgg", backbone_weights=str(tmp_path / "nope.pth"))
    # torchvision's cache is used when it has the file
    cache = tmp_path / "cache"
    (cache / "hub" / "checkpoints").mkdir(parents=True)
    (cache / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth").symlink_to(weight_files["alexnet"])
    monkeypatch.setenv("TORCH_HOME", str(cache))
    assert isinstance(LPIPS("alex"), LPIPS)
    with pytest.raises(ValueError, match="not a torchvision alexnet state dict"):
        LPIPS("alex", backbone_weights=str(weight_files["squeezenet1_1"]))
    with pytest.raises(ValueError, match="linear_weights"):
        LPIPS("alex", linear_weights=str(metrics._lpips_linear_file("squeeze")))
    with pytest.raises(ValueError, match="net must be one of"):
        LPIPS("resnet")


def test_lpips_stays_out_of_checkpoints_but_moves(weight_files):
    parent = torch.nn.Module()
    parent.metric = LPIPS("alex", backbone_weights=str(weight_files["alexnet"]))
    parent.conv = torch.nn.Conv2d(3, 3, 3)
    assert set(parent.state_dict()) == {"conv.weight", "conv.bias"}
    assert len(list(parent.parameters())) == 2
    parent.double()  # dtype changes are ignored: the metric stays float32
    assert parent.conv.weight.dtype == torch.float64
    assert all(p.dtype == torch.float32 for p in parent.metric.network.parameters())
    parent.to("meta")  # device moves are followed
    assert all(p.device.type == "meta" for p in parent.metric.network.parameters())
    assert all(b.device.type == "meta" for b in parent.metric.network.buffers())
    parent.train()
    assert not parent.metric.network.training


# ----------------------------------------------------------------------------- aggregation


def test_evaluation_means_ignore_nan_losses_and_give_per_image_means(pairs):
    from salightning.training.evaluation import EvaluationMeans

    means = EvaluationMeans(crop_border=0, y_channel=False)
    sr = torch.stack([s for s, _ in pairs[:3]])
    hr = torch.stack([h for _, h in pairs[:3]])
    means.update(sr[:2], hr[:2], {"loss": torch.tensor([30.0, 20.0])})
    means.update(sr[2:], hr[2:], {"loss": torch.tensor([float("nan")])})
    out = means.compute()
    assert out["loss"].item() == pytest.approx(25.0)
    torch.testing.assert_close(out["psnr"], psnr(sr, hr).mean(), rtol=0, atol=1e-12)
    means.reset()  # each epoch starts afresh
    means.update(sr[:1], hr[:1], {"loss": torch.tensor([4.0])})
    assert means.compute()["loss"].item() == 4.0


def test_aggregation_exact_with_distributed_padding(pairs):
    """5 images on 2 ranks as DistributedSampler pads them (rank 0: 0,2,4; rank 1: 1,3,0)."""
    sr = torch.stack([s for s, _ in pairs[:5]])
    hr = torch.stack([h for _, h in pairs[:5]])
    values = psnr(sr, hr)
    ranks = [SRMetrics(), SRMetrics()]
    for rank, metric in enumerate(ranks):
        idx = list(range(6))[rank::2]
        keep = torch.tensor([i < 5 for i in idx])
        metric.update(sr[[i % 5 for i in idx]], hr[[i % 5 for i in idx]], keep_mask=keep)
    ranks[0].merge_state(ranks[1])  # what the sum all-reduce does
    torch.testing.assert_close(ranks[0].compute()["psnr"], values.mean().double(), rtol=0, atol=1e-12)


def test_sr_metrics(alex_lpips, photo_batch):
    hr = photo_batch
    sr = torch.stack([bicubic_x4(h) for h in hr])
    w = threshold_edges(hr)
    m = SRMetrics(crop_border=4, y_channel=True, lpips=alex_lpips)
    parent = torch.nn.Module()
    parent.val_metrics = m
    assert len(parent.state_dict()) == 0 and len(list(parent.parameters())) == 0
    m.update(sr[:3], hr[:3], edge_map=w[:3])
    m.update(sr[3:], hr[3:], edge_map=w[3:], keep_mask=torch.tensor([True]))
    out = m.compute()
    assert set(out) == {"psnr", "ssim", "lpips", "edge_psnr", "flat_psnr"}
    torch.testing.assert_close(out["psnr"], psnr(sr, hr, 4, True).mean(), rtol=0, atol=1e-12)
    torch.testing.assert_close(out["ssim"], ssim(sr, hr, 4, True).mean(), rtol=0, atol=1e-12)
    torch.testing.assert_close(out["edge_psnr"], edge_psnr(sr, hr, w, 4, True).mean(), rtol=0, atol=1e-12)
    sr8 = (sr.clamp(0, 1) * 255).round() / 255
    torch.testing.assert_close(out["lpips"], alex_lpips(sr8, hr).double().mean(), rtol=0, atol=1e-6)
    m.reset()
    m.update(sr, hr)
    assert set(m.compute()) == {"psnr", "ssim", "lpips"}
