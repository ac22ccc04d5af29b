"""The study driver's pure parts (experiments/reproduce.py): configs, loss-balance summaries,
tables and the generated verdict, on made-up numbers (no training)."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rp():
    spec = importlib.util.spec_from_file_location("reproduce", REPO / "experiments" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("reproduce", None)


def _rows(values: dict[str, list[float]], metric: str = "psnr", **others: float) -> list[dict]:
    """Rows of one kind: ``values[arm]`` = per-seed ``metric`` (seeds 0, 1, 2 ...)."""
    return [{"arm": arm, "seed": seed, metric: v, **others} for arm, vs in values.items() for seed, v in enumerate(vs)]


def test_stage2_config_has_the_papers_balance(rp, tmp_path):
    arms = {a.key: a for a in rp.ARMS}
    for kind in ("image", "video"):
        base = rp.stage2_config(kind, 0, arms["baseline"], rp.FULL, tmp_path, tmp_path / "s1.ckpt")["model"]
        lv = rp.stage2_config(kind, 0, arms["sa_lv"], rp.FULL, tmp_path, tmp_path / "s1.ckpt")["model"]
        uni = rp.stage2_config(kind, 0, arms["uniform"], rp.FULL, tmp_path, tmp_path / "s1.ckpt", beta1=2.5)["model"]
        for model in (base, lv, uni):
            assert model["perceptual_loss"]["class_path"] == "salightning.losses.DCTPerceptualLoss"
            assert model["perceptual_weight"] == rp.RECIPES[kind]["perceptual_weight"]
            assert model["max_batches"] >= 900
        assert "sa_beta_mode" not in base and "edge_extractor" not in base["pixel_loss"]["init_args"]
        assert (lv["sa_beta_mode"], lv["sa_target_share"]) == ("hold", 0.15)
        assert lv["pixel_loss"]["init_args"]["edge_extractor"] == rp.LOCAL_VARIANCE
        assert uni["pixel_loss"]["init_args"]["beta1"] == 2.5 and "sa_beta_mode" not in uni
    assert len(rp.FULL.image_seeds) >= 3 and len(rp.FULL.video_seeds) >= 3


def test_tenth_means_and_balance_summary(rp):
    assert rp.tenth_means(list(range(20))) == [i * 2 + 0.5 for i in range(10)]
    assert rp.tenth_means([1.0, 3.0]) == [1.0, 3.0]
    rows = [
        {"train/loss": 1.0, "train/perceptual": 0.14, "train/adversarial": 20.0, "train/pixel": 0.2, "train/sa_share": s, "train/sa_beta": b}
        for s, b in zip([0.0] * 10 + [0.15] * 90, [0.0] * 10 + [2.0] * 89 + [4.0])
    ]
    summary = rp.balance_summary(rows, perceptual_weight=5.0, gan_weight=0.005)
    assert summary["perceptual_share"] == pytest.approx(0.7)
    assert summary["gan_share"] == pytest.approx(0.1)
    assert summary["pixel_share"] == pytest.approx(0.2)
    assert summary["sa_share_tenths"][0] == 0.0 and summary["sa_share_tenths"][1:] == pytest.approx([0.15] * 9)
    assert (summary["beta_min"], summary["beta_max"], summary["beta_last"]) == (0.0, 4.0, 4.0)


def test_uniform_beta1_reads_the_sa_lv_run(rp, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    with open(logs / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["step", "train/loss", "train/sa_beta", "val/loss"])
        writer.writeheader()
        writer.writerows([{"step": 1, "train/loss": 1.0, "train/sa_beta": 1.0}, {"step": 2, "val/loss": 0.5}, {"step": 3, "train/loss": 1.0, "train/sa_beta": 3.0}])
    assert rp.uniform_beta1("image", tmp_path, mean_w=0.5) == pytest.approx(0.01 + 2.0 * 0.5)
    with pytest.raises(RuntimeError, match="sa_beta"):
        rp.uniform_beta1("image", tmp_path / "missing", mean_w=0.5)


def test_classify_is_a_paired_t_test_over_seeds(rp):
    assert rp.classify([0.3, 0.2, 0.25], higher_is_better=True) == "better"
    assert rp.classify([0.3, 0.2, 0.25], higher_is_better=False) == "worse"
    assert rp.classify([0.3, -0.1, 0.25], higher_is_better=True) == "unresolved"
    assert rp.classify([0.01, 1.0, 0.02], higher_is_better=True) == "unresolved"  # mean < std
    assert rp.classify([0.5], higher_is_better=True) == "unresolved"
    # every seed up and mean > std, yet t = 2.6 with 2 degrees of freedom: p = 0.12
    assert rp.paired_p_value([0.1, 0.3, 0.5]) == pytest.approx(0.1216, abs=1e-3)
    assert rp.classify([0.1, 0.3, 0.5], higher_is_better=True) == "unresolved"
    assert rp.paired_p_value([0.2, 0.2, 0.2]) == 0.0 and rp.paired_p_value([0.0, 0.0]) == 1.0


def test_delta_table_pairs_seeds(rp):
    rows = _rows({"baseline": [20.0, 21.0, 22.0], "sa_lv": [20.5, 21.5, 21.9]})
    table = rp.delta_table(rows, "baseline", ["baseline", "sa_lv"])
    assert "| SA-LV (held 15%) | +0.30 ± 0.35 (2/3 up) |" in table
    assert "LPIPS" not in table  # no row has it
    assert rp.paired_differences(rows, "sa_lv", "baseline", "psnr") == pytest.approx([0.5, 0.5, -0.1])


def test_results_table_mean_and_spread(rp):
    rows = _rows({"bicubic": [19.0], "baseline": [20.0, 22.0]}, gmsd=0.1)
    table = rp.results_table(rows, ["bicubic", "baseline", "sa_lv"])
    assert "| bicubic | – | 19.00 | 0.1000 |" in table
    assert "| baseline (β₂=0) | 2 | 21.00 ± 1.41 | 0.1000 ± 0.0000 |" in table
    assert "SA-LV" not in table


def test_verdict_follows_the_numbers(rp):
    image = _rows({"baseline": [20.0, 20.1, 20.2], "sa_lv": [20.5, 20.6, 20.8], "sa_canny": [19.0, 19.2, 19.1], "uniform": [20.5, 20.7, 20.7]})
    for r in image:  # GMSD: lower is better; SA-LV has the lowest
        r["gmsd"] = {"baseline": 0.10, "sa_lv": 0.05, "sa_canny": 0.12, "uniform": 0.09}[r["arm"]] + 0.001 * r["seed"]
    run_info = {"image/seed0/sa_lv": {"held": True, "sa_share_tenths": [0.0] + [0.15] * 9}, "image/seed0/sa_canny": {"held": True, "sa_share_tenths": [0.0, 0.15, 0.1]}}
    text = rp.verdict({"image": image}, run_info)
    assert "- SA-LV vs the baseline: better on 2/2 (PSNR (dB) +0.53 ± 0.06 (3/3 up, p 0.0039); GMSD -0.0500 ± 0.0000 (0/3 up, p 0))" in text
    assert "- SA-Canny vs the baseline: better on 0/2; worse on 2/2" in text
    assert "SA-LV vs the uniform control: better on 1/2 (GMSD" in text and "within the seed spread on 1/2 (PSNR" in text
    assert "image SA-Canny vs the baseline: PSNR (dB)" in text.split("**Against it:**")[1]
    assert "1/2 held-β₂ runs kept every tenth-of-run mean" in text and "image/seed0/sa_canny (0.100–0.150)" in text


def test_verdict_says_plainly_when_nothing_separates(rp):
    rows = _rows({"baseline": [20.0, 20.1, 20.2], "sa_lv": [20.1, 20.0, 20.2], "sa_canny": [20.0, 20.2, 20.1], "uniform": [20.1, 20.1, 20.1]})
    text = rp.verdict({"video": rows}, {})
    assert "nothing: no SA arm beat the baseline or the uniform control" in text
    assert "no SA arm was worse" in text and "no difference beyond the seed spread" in text
    assert "**Video** (3 seeds" in text


def test_share_table_reports_the_trace(rp):
    run_info = {
        f"image/seed{s}/sa_lv": {"seconds": 100.0, "held": True, "beta_mean": 1.5, "beta_min": 0.0, "beta_max": 2.0, "beta_last": 1.8,
                                 "sa_share_tenths": [0.05, 0.14, 0.16 + 0.02 * s], "perceptual_share": 0.7, "gan_share": 0.1, "pixel_share": 0.2}
        for s in range(2)
    }
    run_info["image/seed0/uniform"] = {"seconds": 90.0, "beta1": 0.47, "perceptual_share": 0.6}
    table = rp.share_table(run_info, "image", 900)
    assert "| SA-LV (held 15%) | 1.5 (0–2, 1.8); 1.5 (0–2, 1.8) | 0.140–0.160; 0.140–0.180 | 1/2 seeds | 0.700 ± 0.000 |" in table
    assert "β₁ = 0.47" in table and "| 0.600 |" in table


def test_perceptual_scores_rank_a_blurred_image_below_the_original(rp):
    import torch

    torch.manual_seed(0)
    hr = torch.nn.functional.interpolate(torch.rand(1, 3, 48, 48), size=(192, 192), mode="bicubic", align_corners=False).clamp(0, 1)
    blurred = torch.nn.functional.avg_pool2d(hr, 5, stride=1, padding=2, count_include_pad=False)
    same = rp.perceptual_scores(hr, hr, crop_border=4)
    worse = rp.perceptual_scores(blurred, hr, crop_border=4)
    assert same["msssim"] == pytest.approx(1.0, abs=1e-6) and same["gmsd"] == pytest.approx(0.0, abs=1e-6)
    for key in ("msssim", "vif", "haarpsi"):
        assert worse[key] < same[key] - 1e-3, key
    assert worse["gmsd"] > same["gmsd"] + 1e-3
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        rp.perceptual_scores(hr[:, :1], hr[:, :1], crop_border=4)


def test_perceptual_metrics_evaluate_a_checkpoint_on_the_test_photos(rp, tmp_path):
    """The driver's evaluation path end to end on the real test photos: a generator that is a
    bicubic upsampler in disguise would tie; the tiny random one must score below bicubic."""
    import torch

    from conftest import TINY_GENERATOR, make_checkpoint, tiny_generator

    torch.manual_seed(0)
    ckpt = make_checkpoint(tmp_path / "g.ckpt", tiny_generator(), "salightning.models.RRDBNet", dict(TINY_GENERATOR))
    scores = rp.perceptual_metrics("image", {"tiny": ckpt}, frame_step=1)
    assert set(scores) == {"bicubic", "tiny"}
    assert set(scores["tiny"]) == {"msssim", "vif", "haarpsi", "gmsd"}
    assert 0.5 < scores["bicubic"]["msssim"] < 1.0
    assert scores["tiny"]["haarpsi"] < scores["bicubic"]["haarpsi"]
    assert scores["tiny"]["gmsd"] > scores["bicubic"]["gmsd"]
