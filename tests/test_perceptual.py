"""VGG19 feature extractor, perceptual loss (eq. 15) and SA perceptual loss (poster).

No ImageNet weights exist on this machine: the loading path is tested with a torchvision
VGG19 state dict the tests write themselves (randomly initialised, same format and keys).
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from salightning.edges import LocalVariance
from salightning.losses import PerceptualLoss, SAPerceptualLoss, VGGFeatureExtractor, vgg19_layer_names
from salightning.weights import TORCHVISION_FILES, MissingWeightsError

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> tuple[str, dict[str, torch.Tensor]]:
    """A full torchvision VGG19 state dict (random weights) saved as a file; written once."""
    torch.manual_seed(0)
    state = torchvision.models.vgg19().state_dict()
    path = tmp_path_factory.mktemp("weights") / "vgg19.pth"
    torch.save(state, path)
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    return str(path), features


@pytest.fixture()
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def images(photo_batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(hr, sr): (2, 3, 32, 32) real-photo crops and a blurred version of them."""
    hr = photo_batch[:2, :, 48:80, 48:80].contiguous()
    sr = F.avg_pool2d(F.pad(hr, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return hr, sr


def test_layer_names():
    names = vgg19_layer_names()
    assert len(names) == 37
    assert names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert names.index("relu2_2") == 8 and names.index("conv5_4") == 34 and names[-1] == "pool5"


def test_weights_from_file_truncated(vgg_file, empty_torch_home):
    path, features = vgg_file
    extractor = VGGFeatureExtractor(["relu1_2", "conv2_2"], weights=path)
    assert len(extractor.vgg) == 8  # conv1_1 .. conv2_2, nothing after
    for key, value in extractor.vgg.state_dict().items():
        torch.testing.assert_close(value, features[f"features.{key}"], rtol=0, atol=0)
    assert all(not p.requires_grad for p in extractor.vgg.parameters())


def test_weights_from_torchvision_cache(vgg_file, empty_torch_home):
    path, features = vgg_file
    cache = empty_torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    os.symlink(path, cache / "vgg19-dcbb9e9d.pth")
    extractor = VGGFeatureExtractor("conv1_2", weights="imagenet")
    torch.testing.assert_close(extractor.vgg[2].weight, features["features.2.weight"], rtol=0, atol=0)


def test_missing_weights_error_says_how_to_provide_them(empty_torch_home):
    with pytest.raises(MissingWeightsError) as err:
        PerceptualLoss("relu2_2")  # default weights="imagenet", nothing in the cache
    message = str(err.value)
    assert TORCHVISION_FILES["vgg19"] == "vgg19-dcbb9e9d.pth" and "vgg19-dcbb9e9d.pth" in message
    assert str(empty_torch_home / "hub" / "checkpoints") in message  # 1. the cache
    assert "weights option" in message  # 2. naming the file
    missing = empty_torch_home / "nowhere.pth"
    with pytest.raises(MissingWeightsError, match=r"weights=.*nowhere\.pth.*no such file"):
        VGGFeatureExtractor("relu2_2", weights=str(missing))


def test_wrong_weights_file(tmp_path, empty_torch_home):
    path = tmp_path / "not_vgg.pth"
    torch.save(torchvision.models.alexnet().features.state_dict(), path)
    with pytest.raises(ValueError, match=r"not_vgg.pth.*(not a torchvision VGG19|does not fit)"):
        VGGFeatureExtractor("conv2_2", weights=str(path))


def test_random_weights_need_no_file(empty_torch_home, images):
    hr, _ = images
    extractor = VGGFeatureExtractor("relu2_2", weights="random")
    feat = extractor(hr)["relu2_2"]
    assert feat.shape == (2, 128, 16, 16) and feat.abs().sum() > 0
    assert not any(empty_torch_home.iterdir())  # nothing was downloaded


def test_conv5_4_is_pre_activation_and_matches_manual_forward(vgg_file, images):
    path, features = vgg_file
    hr, _ = images
    extractor = VGGFeatureExtractor(["conv5_4", "relu5_4"], weights=path)
    feats = extractor(hr)
    assert list(feats) == ["conv5_4", "relu5_4"] and feats["conv5_4"].shape == (2, 512, 2, 2)
    pre, post = feats["conv5_4"], feats["relu5_4"]
    assert (pre < 0).any()  # not overwritten by the in-place ReLU
    assert not torch.equal(pre, post)
    torch.testing.assert_close(post, pre.clamp_min(0), rtol=0, atol=0)
    reference = torchvision.models.vgg19().features[:35]
    reference.load_state_dict({k[len("features.") :]: v for k, v in features.items() if int(k.split(".")[1]) < 35})
    with torch.no_grad():
        expected = reference((hr - MEAN) / STD)
    torch.testing.assert_close(pre, expected)


def test_pre_activation_clone_at_early_layer(images):
    hr, _ = images
    feats = VGGFeatureExtractor(["conv1_2", "relu1_2"], weights="random")(hr)
    assert (feats["conv1_2"] < 0).any()
    torch.testing.assert_close(feats["relu1_2"], F.relu(feats["conv1_2"]), rtol=0, atol=0)


class Parent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.loss = PerceptualLoss(["conv1_2", "relu2_2"], weights="random")


def test_vgg_is_kept_out_of_state_dict_and_parameters(images):
    hr, sr = images
    parent = Parent()
    vgg = parent.loss.feature_extractor.vgg
    assert set(parent.state_dict()) == {"conv.weight", "conv.bias"}
    assert sum(p.numel() for p in parent.parameters()) == sum(p.numel() for p in parent.conv.parameters())
    assert not any("vgg" in name for name, _ in parent.named_modules())
    # Frozen and in eval mode whatever the parent does.
    parent.train()
    parent.requires_grad_(True)
    parent.apply(lambda m: nn.init.zeros_(m.weight) if isinstance(m, nn.Conv2d) else None)
    assert not vgg.training and all(not p.requires_grad for p in vgg.parameters())
    assert vgg[0].weight.abs().sum() > 0
    # .to() still moves it.
    parent.to(torch.float64)
    assert vgg[0].weight.dtype == torch.float64
    feats = parent.loss.feature_extractor(hr.double())
    assert all(f.dtype == torch.float64 for f in feats.values())
    assert parent.loss(sr.double(), hr.double()).dtype == torch.float64
    # A copy (e.g. for EMA or a checkpoint callback) carries its own VGG.
    clone = copy.deepcopy(parent)
    assert clone.loss.feature_extractor.vgg is not vgg
    torch.testing.assert_close(clone.loss(sr.double(), hr.double()), parent.loss(sr.double(), hr.double()))


@pytest.mark.parametrize("distance", ["l1", "charbonnier"])
def test_perceptual_loss_by_hand(images, distance):
    hr, sr = images
    torch.manual_seed(0)
    loss = PerceptualLoss(["conv1_2", "relu2_2"], distance=distance, weights="random", layer_weights=[0.5, 2.0])
    f_sr, f_hr = loss.feature_extractor(sr), loss.feature_extractor(hr)
    rho = (lambda d: d.abs()) if distance == "l1" else (lambda d: torch.sqrt(d * d + 1e-6))
    expected = 0.5 * rho(f_sr["conv1_2"] - f_hr["conv1_2"]).mean() + 2.0 * rho(f_sr["relu2_2"] - f_hr["relu2_2"]).mean()
    torch.testing.assert_close(loss(sr, hr), expected)
    if distance == "l1":
        assert loss(hr, hr.clone()).item() == 0.0
    assert loss(sr, hr) > loss(hr, hr.clone())


def test_perceptual_loss_gradients_reach_sr_only(images):
    hr, sr = images
    loss = PerceptualLoss("relu2_2", weights="random")
    sr = sr.clone().requires_grad_(True)
    target = hr.clone().requires_grad_(True)
    loss(sr, target).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert target.grad is None
    assert all(p.grad is None for p in loss.feature_extractor.vgg.parameters())


def test_perceptual_bad_arguments(images, empty_torch_home):
    hr, _ = images
    with pytest.raises(ValueError, match="unknown VGG19 layer 'conv6_1'"):
        PerceptualLoss("conv6_1", weights="random")
    with pytest.raises(ValueError, match="layer_weights must have one weight per layer"):
        PerceptualLoss(["conv1_2", "relu2_2"], weights="random", layer_weights=[1.0])
    with pytest.raises(ValueError, match="layer_weights must be >= 0"):
        PerceptualLoss("conv1_2", weights="random", layer_weights=[-1.0])
    with pytest.raises(ValueError, match="distance must be 'l1', 'charbonnier' or 'mse', got 'l2'"):
        PerceptualLoss(distance="l2")  # checked before looking for weights
    with pytest.raises(ValueError, match=r"eps must be > 0, got -1"):
        PerceptualLoss(distance="charbonnier", eps=-1)
    with pytest.raises(ValueError, match="weights must be"):
        VGGFeatureExtractor("conv1_2", weights="")
    loss = PerceptualLoss("conv1_2", weights="random")
    with pytest.raises(ValueError, match="sr and hr must have the same shape"):
        loss(hr[..., :16], hr)
    with pytest.raises(ValueError, match=r"x must have 1 or 3 channels"):
        loss(hr[:, :2], hr[:, :2])


# ---------------------------------------------------------------- SA perceptual loss (poster)
@pytest.fixture(scope="module")
def sa_loss() -> SAPerceptualLoss:
    torch.manual_seed(0)
    return SAPerceptualLoss(
        alpha=0.5, beta=3.0, edge_extractor=LocalVariance(), layers=["conv1_2", "relu2_2"], weights="random"
    )


def test_sa_perceptual_weight_maps(sa_loss, images):
    hr, _ = images
    w = LocalVariance()(hr)
    maps = sa_loss.feature_weight_maps(w)
    assert maps["conv1_2"].shape == (2, 64, 32, 32) and maps["relu2_2"].shape == (2, 128, 16, 16)
    w_peak = w.amax(dim=(1, 2, 3)).view(2, 1)
    assert (w_peak > 0.9).all()
    for m in maps.values():
        assert not m.requires_grad and m.min() >= 0
        peaks = m.amax(dim=(-2, -1))
        assert (peaks <= w_peak + 1e-6).all()
        assert ((peaks - w_peak).abs() < 1e-5).float().mean() > 0.9  # each responding channel peaks at max(W)
    # A faint edge map (a nearly flat photo) gives faint weights, not weights blown up to 1.
    faint = sa_loss.feature_weight_maps(0.01 * w)
    assert all(m.max() <= 0.01 * w.max() + 1e-6 for m in faint.values())
    # Zero where the receptive field sees no edge: an edge map with one edge square only.
    w_local = torch.zeros(1, 3, 32, 32)
    w_local[..., 4:8, 4:8] = 1.0
    m = sa_loss.feature_weight_maps(w_local)["conv1_2"]  # receptive field 5x5
    assert m[..., 4:8, 4:8].mean() > 0.1
    assert m[..., 12:, 12:].abs().max() < 1e-4


def test_sa_perceptual_loss_formula(sa_loss, images):
    hr, sr = images
    w = LocalVariance()(hr)
    maps = sa_loss.feature_weight_maps(w)
    f_sr, f_hr = sa_loss.feature_extractor(sr), sa_loss.feature_extractor(hr)
    expected = sum(
        ((0.5 + 3.0 * maps[n]) * torch.sqrt((f_sr[n] - f_hr[n]) ** 2 + 1e-6)).mean() for n in ("conv1_2", "relu2_2")
    )
    torch.testing.assert_close(sa_loss(sr, hr), expected)  # W from the edge extractor
    torch.testing.assert_close(sa_loss(sr, hr, edge_map=w), expected)
    grey = w.mean(1, keepdim=True)  # a (B, 1, H, W) map is repeated to the 3 channels
    torch.testing.assert_close(sa_loss(sr, hr, edge_map=grey), sa_loss(sr, hr, edge_map=grey.expand_as(w)))
    # The edge term adds to the plain one.
    plain = PerceptualLoss(["conv1_2", "relu2_2"], distance="charbonnier", weights="random")
    plain.feature_extractor = sa_loss.feature_extractor
    assert sa_loss(sr, hr) > 0.5 * plain(sr, hr)
    # No edge anywhere, or beta = 0: alpha times the plain perceptual loss.
    torch.testing.assert_close(sa_loss(sr, hr, edge_map=torch.zeros_like(w)), 0.5 * plain(sr, hr), rtol=1e-4, atol=1e-7)
    no_sa = copy.deepcopy(sa_loss)
    no_sa.beta = 0.0
    torch.testing.assert_close(no_sa(sr, hr), 0.5 * plain(sr, hr))


def test_sa_perceptual_gradients_and_bad_input(sa_loss, images):
    hr, sr = images
    sr = sr.clone().requires_grad_(True)
    sa_loss(sr, hr).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert all(p.grad is None for p in sa_loss.feature_extractor.vgg.parameters())
    with pytest.raises(ValueError, match="edge_map must have the batch and spatial size"):
        sa_loss(sr, hr, edge_map=torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"alpha must be >= 0, got -1.0"):
        SAPerceptualLoss(alpha=-1.0, weights="random")
    with pytest.raises(ValueError, match=r"beta must be >= 0, got -0.5"):
        SAPerceptualLoss(beta=-0.5, weights="random")
