"""Real-ESRGAN degradations: kernels and USM against references written here from the paper's
formulas (and BasicSR 1.4.2 where installed), JPEG against libjpeg (Pillow, OpenCV) on real
photos, noise statistics, the pipeline's determinism, per-image randomness and option errors,
and the U-Net discriminator against BasicSR's.

BasicSR is a test-only reference: ``pip install --no-deps basicsr==1.4.2``.
"""

from __future__ import annotations

import importlib.util
import io
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import load_photo
from salightning.degradations import (
    DegradedPair,
    RealESRGANDegradation,
    add_gaussian_noise,
    add_poisson_noise,
    filter2d,
    gaussian_kernels,
    generalized_gaussian_kernels,
    jpeg,
    plateau_kernels,
    sinc_kernels,
    usm_sharpen,
)
from salightning.models import UNetDiscriminatorSN

BENCH = Path(__file__).resolve().parents[1] / "bench"

# (sigma_x, sigma_y, theta, beta) covering iso, aniso, rotations of both signs, beta < 1 and > 1
PARAMS = [(0.2, 0.2, 0.0, 0.5), (3.0, 0.7, 0.6, 1.0), (1.3, 2.9, -2.5, 2.0), (2.2, 1.1, math.pi, 4.0), (0.9, 0.4, 1.2, 1.5)]


def _params(dtype=torch.float64):
    return [torch.tensor(col, dtype=dtype) for col in zip(*PARAMS)]


def _basicsr():
    if importlib.util.find_spec("basicsr") is None:
        pytest.skip("BasicSR is not installed (test-only reference: pip install --no-deps basicsr==1.4.2)")
    pytest.importorskip("scipy")
    sys.path.insert(0, str(BENCH))
    from basicsr_pipeline import import_basicsr

    try:
        return import_basicsr()
    except ImportError as error:  # BasicSR imports optional packages of its own
        pytest.skip(f"BasicSR does not import here: {error}")


def _reference_kernel(size: int, sx: float, sy: float, theta: float, beta: float, family: str) -> np.ndarray:
    """Paper formulas: Sigma = R diag(sx^2, sy^2) R^T, q = p^T Sigma^-1 p over the integer grid."""
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    inv = np.linalg.inv(rot @ np.diag([sx**2, sy**2]) @ rot.T)
    r = size // 2
    kernel = np.empty((size, size))
    for i in range(size):
        for j in range(size):
            p = np.array([j - r, i - r], dtype=np.float64)  # (x = column, y = row)
            q = p @ inv @ p
            kernel[i, j] = {"gauss": np.exp(-0.5 * q), "general": np.exp(-0.5 * q**beta), "plateau": 1 / (1 + q**beta)}[family]
    return kernel / kernel.sum()


@pytest.mark.parametrize("family", ["gauss", "general", "plateau"])
def test_kernels_match_the_formulas(family):
    sx, sy, th, beta = _params()
    fn = {"gauss": lambda: gaussian_kernels(21, sx, sy, th), "general": lambda: generalized_gaussian_kernels(21, sx, sy, th, beta),
          "plateau": lambda: plateau_kernels(21, sx, sy, th, beta)}[family]
    out = fn()
    assert out.shape == (len(PARAMS), 21, 21) and out.dtype == torch.float64
    for k, p in zip(out, PARAMS):
        np.testing.assert_allclose(k.numpy(), _reference_kernel(21, *p, family), atol=1e-12)
    # float32 parameters give float32 kernels, to float32 precision
    out32 = {"gauss": lambda: gaussian_kernels(21, *_params(torch.float32)[:3])}.get(family)
    if out32:
        assert out32().dtype == torch.float32


def test_kernels_match_basicsr():
    d = _basicsr().degradations
    sx, sy, th, beta = _params(torch.float32)
    ours = {
        "gauss": gaussian_kernels(21, sx, sy, th),
        "general": generalized_gaussian_kernels(21, sx, sy, th, beta),
        "plateau": plateau_kernels(21, sx, sy, th, beta),
    }
    for i, (a, b, t, be) in enumerate(PARAMS):
        refs = {
            "gauss": d.bivariate_Gaussian(21, a, b, t, isotropic=False),
            "general": d.bivariate_generalized_Gaussian(21, a, b, t, be, isotropic=False),
            "plateau": d.bivariate_plateau(21, a, b, t, be, isotropic=False),
        }
        for name, ref in refs.items():
            assert np.abs(ours[name][i].numpy() - ref).max() <= 1e-6, name


def test_sinc_kernels_match_the_formula_and_basicsr():
    special = pytest.importorskip("scipy.special")
    cutoffs = [math.pi / 5, 1.0, math.pi / 2, math.pi]
    out = sinc_kernels(13, torch.tensor(cutoffs, dtype=torch.float64), pad_to=21)
    assert out.shape == (4, 21, 21)
    assert torch.all(out[:, :4] == 0) and torch.all(out[:, :, -4:] == 0)
    for k, wc in zip(out, cutoffs):
        i = np.arange(13) - 6
        r = np.hypot(i[:, None], i[None, :])
        with np.errstate(invalid="ignore", divide="ignore"):
            ref = wc * special.j1(wc * r) / (2 * np.pi * r)
        ref[6, 6] = wc**2 / (4 * np.pi)
        # torch's J1 agrees with scipy's to ~1e-6 relative (1e-8 absolute here)
        np.testing.assert_allclose(k[4:17, 4:17].numpy(), ref / ref.sum(), atol=1e-7)
    try:
        d = _basicsr().degradations
    except pytest.skip.Exception:
        return
    for k, wc in zip(sinc_kernels(13, torch.tensor(cutoffs), pad_to=21), cutoffs):
        assert np.abs(k.numpy() - d.circular_lowpass_kernel(wc, 13, pad_to=21)).max() <= 1e-6


def test_filter2d_is_a_per_image_correlation_with_reflected_borders():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 12, 9, generator=g, dtype=torch.float64)
    k = torch.rand(2, 5, 5, generator=g, dtype=torch.float64)
    out = filter2d(x, k)
    for b in range(2):
        padded = np.pad(x[b].numpy(), ((0, 0), (2, 2), (2, 2)), mode="reflect")
        ref = np.zeros((3, 12, 9))
        for i in range(12):
            for j in range(9):
                ref[:, i, j] = (padded[:, i : i + 5, j : j + 5] * k[b].numpy()).sum((1, 2))
        np.testing.assert_allclose(out[b].numpy(), ref, atol=1e-12)
    # subnormal kernel weights are flushed (speed) without changing the result
    tiny = k.clone().float()
    tiny[:, 0, 0] = 1e-40
    assert torch.allclose(filter2d(x.float(), tiny), filter2d(x.float(), k.float().index_put((torch.arange(2), torch.tensor(0), torch.tensor(0)), torch.zeros(2))), atol=1e-6)
    with pytest.raises(ValueError, match="too large"):
        filter2d(torch.rand(1, 3, 8, 8), torch.rand(1, 21, 21))
    with pytest.raises(ValueError, match="odd"):
        filter2d(torch.rand(1, 3, 8, 8), torch.rand(1, 4, 4))


def _photo_crops(size: int = 128) -> torch.Tensor:
    crops = []
    for name in ("astronaut", "coffee", "chelsea"):
        p = load_photo(name)
        _, h, w = p.shape
        crops.append(p[:, (h - size) // 2 : (h + size) // 2, (w - size) // 2 : (w + size) // 2])
    return torch.stack(crops)


def _dense_usm(x: torch.Tensor, weight=0.5, threshold=10.0) -> torch.Tensor:
    """The USM formula with one dense 51x51 Gaussian (sigma 8, OpenCV's for side 51), float64."""
    ax = torch.arange(51, dtype=torch.float64) - 25
    g = torch.exp(-(ax**2) / 128)
    kernel = torch.outer(g, g) / g.sum() ** 2

    def blur(t):
        b, c, h, w = t.shape
        return F.conv2d(F.pad(t, (25,) * 4, mode="reflect").reshape(b * c, 1, h + 50, w + 50), kernel[None, None]).view(b, c, h, w)

    residual = x - blur(x)
    mask = blur((residual.abs() * 255 > threshold).double())
    return mask * (x + weight * residual).clamp(0, 1) + (1 - mask) * x


def test_usm_matches_the_dense_formula_and_basicsr():
    x = _photo_crops()
    ours = usm_sharpen(x.double())
    assert (ours - _dense_usm(x.double())).abs().max() < 1e-10
    assert ours.shape == x.shape and not torch.equal(ours, x.double())
    try:
        bsr = _basicsr()
    except pytest.skip.Exception:
        return
    ref = bsr.USMSharp()(x)
    diff = (usm_sharpen(x) - ref).abs()
    # float32 sums in another order can flip the 10-level threshold of a residual lying on it,
    # which moves the soft mask by a kernel tap (<= 0.0025): rare, and tiny
    assert diff.mean() < 1e-6 and diff.max() < 2e-3


def test_usm_rejects_images_smaller_than_its_radius():
    with pytest.raises(ValueError, match="larger than 25"):
        usm_sharpen(torch.rand(1, 3, 20, 64))


def _psnr8(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return 10 * math.log10(255**2 / mse)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_jpeg_is_within_39_db_of_libjpeg(name):
    cv2 = pytest.importorskip("cv2")
    from PIL import Image

    photo = load_photo(name)[:, :200, :300]  # 200x300: not whole 16x16 MCUs on the right
    img8 = (photo * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    qualities = [30, 50, 75, 95]
    batch = photo.expand(len(qualities), -1, -1, -1)
    ours = (jpeg(batch, torch.tensor(qualities, dtype=torch.float32)) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for q, out in zip(qualities, ours):
        buf = io.BytesIO()
        Image.fromarray(img8).save(buf, format="JPEG", quality=q)
        pil = np.asarray(Image.open(buf).convert("RGB"))
        _, enc = cv2.imencode(".jpg", img8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        ocv = cv2.imdecode(enc, cv2.IMREAD_COLOR)[..., ::-1]
        assert _psnr8(out, pil) >= 39, (name, q, _psnr8(out, pil))
        assert _psnr8(out, ocv) >= 39, (name, q, _psnr8(out, ocv))
        # and it is a compression: far from the input at low quality
        if q == 30:
            assert _psnr8(out, img8) < 40


def test_jpeg_per_image_quality_equals_one_call_per_image():
    x = _photo_crops(64)
    q = torch.tensor([20.0, 60.0, 99.0])
    batch = jpeg(x, q)
    for i in range(3):
        assert torch.equal(batch[i : i + 1], jpeg(x[i : i + 1], float(q[i])))
    assert torch.equal(batch * 255, (batch * 255).round())
    with pytest.raises(ValueError, match=r"quality must be in \[1, 100\]"):
        jpeg(x, torch.tensor([0.0, 50.0, 101.0]))
    with pytest.raises(ValueError, match="quality must be a number or a"):
        jpeg(x, torch.tensor([50.0, 60.0]))


def test_gaussian_noise_has_the_asked_strength_and_grey_noise_is_shared():
    x = torch.full((2, 3, 128, 128), 0.5)
    g = torch.Generator().manual_seed(0)
    out = add_gaussian_noise(x, torch.tensor([5.0, 20.0]), torch.tensor([False, True]), g)
    noise = (out - x) * 255
    assert abs(float(noise[0].std()) - 5.0) < 0.2 and abs(float(noise[1].std()) - 20.0) < 0.5
    assert torch.equal(noise[1, 0], noise[1, 2]) and not torch.equal(noise[0, 0], noise[0, 2])


def test_poisson_noise_grows_with_the_scale_and_is_zero_at_zero():
    x = _photo_crops(64)
    g = torch.Generator().manual_seed(0)
    out = add_poisson_noise(x, torch.tensor([0.0, 0.5, 3.0]), False, g)
    d = (out - x).abs().mean((1, 2, 3))
    assert float(d[0]) == 0 and 0 < float(d[1]) < float(d[2])
    grey = add_poisson_noise(x, torch.tensor([1.0, 1.0, 1.0]), True, g)
    unclipped = ((grey > 0) & (grey < 1)).all(1)
    shared = (grey - x)[:, 0] - (grey - x)[:, 1]
    assert unclipped.float().mean() > 0.8 and shared[unclipped].abs().max() < 1e-6


def test_degradation_shapes_levels_and_return_type():
    hr = _photo_crops(128)
    out = RealESRGANDegradation(scale=4, seed=0)(hr)
    assert isinstance(out, DegradedPair)
    lr, hr_usm = out
    assert lr.shape == (3, 3, 32, 32) and hr_usm.shape == hr.shape
    assert torch.equal(lr * 255, (lr * 255).round()) and lr.min() >= 0 and lr.max() <= 1
    assert torch.equal(hr_usm, usm_sharpen(hr))
    plain = RealESRGANDegradation(scale=2, sharpen=False, seed=0)(hr)
    assert plain.lr.shape == (3, 3, 64, 64) and plain.hr_usm is hr


def test_degradation_is_reproducible_and_resumes_from_its_state_dict():
    hr = _photo_crops(96)
    a, b = RealESRGANDegradation(seed=3), RealESRGANDegradation(seed=3)
    assert torch.equal(a(hr).lr, b(hr).lr)
    assert not torch.equal(a(hr).lr, RealESRGANDegradation(seed=4)(hr).lr)
    state = a.state_dict()
    expected = a(hr).lr
    resumed = RealESRGANDegradation(seed=99)
    resumed.load_state_dict(state)
    assert torch.equal(resumed(hr).lr, expected)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(a(hr, generator=g1).lr, b(hr, generator=g2).lr)


def test_degradation_draws_per_image():
    hr = _photo_crops(96)[:1].expand(6, -1, -1, -1)
    lr = RealESRGANDegradation(seed=0)(hr).lr
    assert all(not torch.equal(lr[0], lr[i]) for i in range(1, 6))


def test_degradation_is_mostly_a_blurred_noisy_downscale():
    """Loose sanity against the bicubic LR: close in content (PSNR well above noise) but degraded."""
    hr = _photo_crops(128)
    lr = RealESRGANDegradation(seed=1)(hr.repeat(2, 1, 1, 1)).lr
    bicubic = F.interpolate(hr.repeat(2, 1, 1, 1), scale_factor=0.25, mode="bicubic", antialias=True).clamp(0, 1)
    psnr = -10 * torch.log10(((lr - bicubic) ** 2).mean((1, 2, 3)))
    assert torch.all(psnr > 12) and torch.all(psnr < 40)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"kernel_prob": (0.5, 0.25, 0.12, 0.03, 0.12, 0.03)}, "kernel_prob must sum to 1"),
        ({"resize_prob2": (0.5, 0.5, 0.5)}, "resize_prob2 must sum to 1"),
        ({"kernel_prob": (0.5, 0.5)}, "kernel_prob must have 6 probabilities"),
        ({"resize_range": (1.5, 0.15)}, "resize_range is inverted"),
        ({"noise_range2": (25, 1)}, "noise_range2 is inverted"),
        ({"blur_sigma": (3, 0.2)}, "blur_sigma is inverted"),
        ({"blur_kernel_size": 20}, "blur_kernel_size must be an odd integer"),
        ({"blur_kernel_size2": 5}, "blur_kernel_size2 must be an odd integer >= 7"),
        ({"jpeg_range": (0, 95)}, r"jpeg_range must lie within \[1.0, 100.0\]"),
        ({"jpeg_range2": (30, 101)}, "jpeg_range2 must lie within"),
        ({"sinc_prob": 1.5}, "sinc_prob must be a probability"),
        ({"kernel_list": ("iso", "box")}, "kernel_list must name kernels among"),
        ({"betag_range": (2, 4)}, "betag_range must contain 1"),
        ({"scale": 0}, "scale must be an integer >= 1"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        RealESRGANDegradation(**options)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="not divisible by scale=4"):
        RealESRGANDegradation()(torch.rand(1, 3, 130, 128))
    with pytest.raises(ValueError, match="too small for these options: it needs sides >= 74"):
        RealESRGANDegradation()(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="oversized|too large"):
        filter2d(torch.rand(1, 3, 16, 16), torch.rand(1, 41, 41))
    with pytest.raises(ValueError, match="an 8-bit image"):
        RealESRGANDegradation()(torch.rand(1, 3, 128, 128) * 255)


def test_unet_discriminator_parameters_keys_and_outputs():
    d = UNetDiscriminatorSN()
    # BasicSR's UNetDiscriminatorSN(3, 64, True) has 4,376,897 parameters (Real-ESRGAN's net_d)
    assert sum(p.numel() for p in d.parameters()) == 4_376_897
    keys = list(d.state_dict())
    assert keys[:2] == ["conv0.weight", "conv0.bias"] and "conv1.weight_orig" in keys and "conv8.weight_v" in keys
    assert keys[-2:] == ["conv9.weight", "conv9.bias"]
    x = torch.rand(2, 3, 32, 32)
    assert d(x).shape == (2, 1, 32, 32)
    tiny = UNetDiscriminatorSN(3, 8, skip_connection=False)
    assert tiny(x).shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="divisible by 8"):
        d(torch.rand(1, 3, 36, 32))


def test_unet_discriminator_equals_basicsr():
    _basicsr()
    from basicsr.archs.discriminator_arch import UNetDiscriminatorSN as Reference

    torch.manual_seed(0)
    ref = Reference(3, 16, True).eval()
    ours = UNetDiscriminatorSN(3, 16, True).eval()
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    x = _photo_crops(64)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), atol=1e-6)


@pytest.mark.slow
def test_lr_statistics_match_basicsrs_pipeline():
    """PSNR of the LR against the bicubic HR, ours vs Real-ESRGAN's pipeline in BasicSR (driven by
    bench/basicsr_pipeline.py), over 96 random 128x128 photo crops: close means and spreads
    (bench/bench_degradation.py measures it on 300 crops of 256x256)."""
    _basicsr()
    import random

    from basicsr_pipeline import BasicSRDegradation

    from salightning.ops import imresize

    photos = [load_photo(n) for n in ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left")]
    g = torch.Generator().manual_seed(0)
    crops = []
    for i in range(96):
        p = photos[i % len(photos)]
        top, left = (int(torch.randint(s - 128 + 1, (1,), generator=g)) for s in p.shape[1:])
        crops.append(p[:, top : top + 128, left : left + 128])
    hr = torch.stack(crops)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    ours, reference = RealESRGANDegradation(seed=0), BasicSRDegradation()
    bicubic = imresize(hr, 0.25).clamp(0, 1)

    def psnr(degrade) -> torch.Tensor:
        # one crop per call: per-batch draws would make the crops of a batch alike
        lrs = torch.cat([degrade(crop)[0] for crop in hr.split(1)])
        return -10 * torch.log10(((lrs - bicubic) ** 2).mean((1, 2, 3)))

    ours_psnr, ref_psnr = psnr(ours), psnr(reference)
    assert abs(float(ours_psnr.mean() - ref_psnr.mean())) < 1.0, (float(ours_psnr.mean()), float(ref_psnr.mean()))
    assert 0.67 < float(ours_psnr.std() / ref_psnr.std()) < 1.5, (float(ours_psnr.std()), float(ref_psnr.std()))


def test_gt_only_training_synthesises_the_lr_on_the_device_and_checkpoints_its_state(tmp_path, photos):
    """An HR-only datamodule and a degradation on the module: training batches get their LR in
    on_train_batch_start (validation batches are paired and left alone), and the
    degradation's generator state travels in the checkpoint."""
    from conftest import make_module, make_project, make_trainer

    from salightning.data import GTImageSRDataModule
    from salightning.training import SRGANModule

    root = make_project(tmp_path, photos)
    data = GTImageSRDataModule(train_hr=str(root / "train"), val_hr=str(root / "val"), patch_size=80, batch_size=2,
                               num_workers=0, samples_per_epoch=4, pin_memory=False)
    data.setup("fit")
    item = data.datasets["train"][0]
    assert set(item) == {"hr", "name"} and item["hr"].shape == (3, 80, 80)
    module = make_module(stage=1, degradation=RealESRGANDegradation(seed=5))
    seen = []
    module.training_step = lambda batch, batch_idx: seen.append({k: v.shape for k, v in batch.items() if torch.is_tensor(v)})
    trainer = make_trainer(tmp_path, limit_val_batches=1)
    trainer.fit(module, data)
    assert seen == [{"hr": (2, 3, 80, 80), "lr": (2, 3, 20, 20), "hr_usm": (2, 3, 80, 80)}] * 2
    path = tmp_path / "deg.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=False)["state_dict"]["degradation._extra_state"]["generator"]
    assert torch.equal(state, module.degradation.generator.get_state())
    assert not torch.equal(state, torch.Generator().manual_seed(5).get_state())
    restored = make_module(stage=1, degradation=RealESRGANDegradation(seed=0))
    restored.load_state_dict(torch.load(path, weights_only=False)["state_dict"])
    hr = _photo_crops(96)
    assert torch.equal(restored.degradation(hr).lr, module.degradation(hr).lr)
    with pytest.raises(ValueError, match="leave train_lr unset"):
        GTImageSRDataModule(train_hr=str(root / "train"), train_lr=str(root / "train")).setup("fit")
    assert isinstance(module, SRGANModule)


def test_degrade_command_writes_the_pairs_the_generator_would_receive(tmp_path, photos, capsys):
    from conftest import make_project, run_main, write_config

    root = make_project(tmp_path, photos)
    config = write_config(tmp_path / "deg.yaml", {
        "model": {"degradation": {"class_path": "salightning.degradations.RealESRGANDegradation", "init_args": {"seed": 3}}},
        "data": {"class_path": "salightning.data.GTImageSRDataModule",
                 "init_args": {"train_hr": str(root / "train"), "patch_size": 80, "batch_size": 2, "num_workers": 0, "samples_per_epoch": 4}},
    })
    code, stdout, _ = run_main(["degrade", "--config", str(config), "--output", str(tmp_path / "pairs"), "--count", "3"], capsys)
    assert code == 0 and "wrote 3 pairs" in stdout
    from PIL import Image

    names = sorted(p.name for p in (tmp_path / "pairs").iterdir())
    assert names == [f"{i:06d}_{s}.png" for i in range(3) for s in ("hr", "hr_gan", "lr")]
    assert Image.open(tmp_path / "pairs" / "000000_lr.png").size == (20, 20)
    assert Image.open(tmp_path / "pairs" / "000002_hr.png").size == (80, 80)
    # the same pairs as the module's degradation makes from the same batches
    from salightning.data import GTImageSRDataModule

    data = GTImageSRDataModule(train_hr=str(root / "train"), patch_size=80, batch_size=2, num_workers=0, samples_per_epoch=4)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    lr = RealESRGANDegradation(seed=3)(batch["hr"]).lr
    written = torch.from_numpy(np.asarray(Image.open(tmp_path / "pairs" / "000001_lr.png"))).permute(2, 0, 1).float() / 255
    assert torch.equal(written, lr[1])
    code, _, err = run_main(["degrade", "--config", str(write_config(tmp_path / "bad.yaml", {"data": {}})), "--output", str(tmp_path / "x")], capsys)
    assert code != 0 and "model.degradation" in err


@pytest.mark.slow
def test_quickstart_realesrgan_end_to_end(tmp_path):
    """configs/quickstart_realesrgan.yaml through the console script, at reduced size: HR-only
    sample photos, LR synthesised in the training process, U-Net D; it writes last.ckpt."""
    import os

    from conftest import run_in_group

    repo = Path(__file__).resolve().parents[1]
    script = Path(sys.executable).with_name("salightning")
    env = dict(os.environ, WANDB_MODE="disabled", SALIGHTNING_CACHE_DIR=str(tmp_path / "cache"))
    result = run_in_group(
        [str(script), "fit", "--config", str(repo / "configs" / "quickstart_realesrgan.yaml"), "--trainer.max_epochs", "1",
         "--data.init_args.samples_per_epoch", "16", "--data.init_args.num_workers", "0",
         "--data.init_args.eval_patch_size", "64", "--trainer.limit_val_batches", "1",
         "--trainer.enable_progress_bar", "false"],
        cwd=tmp_path, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    last = list((tmp_path / "runs" / "quickstart_realesrgan").glob("version_*/checkpoints/last.ckpt"))
    assert len(last) == 1
    state = torch.load(last[0], weights_only=False)["state_dict"]
    assert "degradation._extra_state" in state and "discriminator.conv1.weight_orig" in state


def test_resuming_with_the_degradation_on_is_bit_identical(tmp_path, photos):
    """4 batches straight vs 2 batches, a checkpoint, and 2 more from it: the same generator."""
    from conftest import make_module, make_project, make_trainer

    from salightning.data import GTImageSRDataModule

    root = make_project(tmp_path, photos)

    def data():
        return GTImageSRDataModule(train_hr=str(root / "train"), val_hr=str(root / "val"), patch_size=80, batch_size=2,
                                   num_workers=0, samples_per_epoch=8, pin_memory=False)

    def run(max_steps, ckpt_path=None):
        module = make_module(stage=1, degradation=RealESRGANDegradation(seed=5))
        trainer = make_trainer(tmp_path, max_epochs=-1, max_steps=max_steps, limit_val_batches=0)
        trainer.fit(module, data(), ckpt_path=ckpt_path)
        return module, trainer

    straight, _ = run(4)
    _, first = run(2)
    first.save_checkpoint(tmp_path / "half.ckpt")
    resumed, _ = run(4, tmp_path / "half.ckpt")
    for a, b in zip(straight.generator.parameters(), resumed.generator.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(straight.degradation.generator.get_state(), resumed.degradation.generator.get_state())
