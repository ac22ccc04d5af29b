"""Validation that picks the model a user would pick: whole images scored like `salightning
evaluate`, LPIPS when its weights are there, weight-free MS-SSIM / VIF, any as the monitor."""

from __future__ import annotations

import csv

import pytest
import torch

from conftest import make_module, make_project, make_trainer, run_main, tiny_config, write_config
from salightning.metrics import ms_ssim, ms_ssim_scales, vif


def test_ms_ssim_and_vif_score_small_images_and_rank_a_worse_copy_lower(photo_batch):
    hr = photo_batch[:2, :, :48, :48]
    slightly = (hr + 0.02 * torch.randn_like(hr, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    badly = (hr + 0.1 * torch.randn_like(hr, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    for metric in (ms_ssim, vif):
        same, near, far = (metric(x, hr, crop_border=2, y_channel=True) for x in (hr, slightly, badly))
        assert same.shape == (2,) and torch.allclose(same, torch.ones(2, dtype=torch.float64), atol=1e-6)
        assert (far < near).all() and (near < 1).all(), (metric.__name__, near, far)
    assert [ms_ssim_scales(s, s) for s in (11, 44, 99, 176)] == [2, 3, 4, 5]
    with pytest.raises(ValueError, match="41x41"):
        vif(hr[..., :40, :40], hr[..., :40, :40])


def _random_alexnet_file(tmp_path):
    """An ImageNet-shaped AlexNet state dict (random values: there are no real weights offline)."""
    import torchvision

    torch.manual_seed(0)
    path = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet().state_dict(), path)
    return path


def test_validation_logs_lpips_ms_ssim_and_vif_when_the_lpips_weights_are_given(tmp_path, patch_loaders, capsys):
    _, val = patch_loaders
    module = make_module(stage=2, eval_lpips_weights=str(_random_alexnet_file(tmp_path)))
    metrics = make_trainer(tmp_path).validate(module, val, verbose=False)[0]
    for name in ("val/psnr", "val/ssim", "val/lpips", "val/ms_ssim", "val/edge_psnr", "val/loss"):
        assert name in metrics and torch.isfinite(torch.tensor(metrics[name])), (name, metrics)
    assert "val/vif" not in metrics  # 32x32 patches less the border: smaller than VIF's 41x41
    assert "LPIPS not computed" not in capsys.readouterr().err
    assert not any("lpips" in key for key in module.state_dict())  # never in checkpoints


def test_validation_without_lpips_weights_says_so_in_one_line(tmp_path, patch_loaders, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))
    _, val = patch_loaders
    metrics = make_trainer(tmp_path).validate(make_module(stage=1), val, verbose=False)[0]
    assert "val/lpips" not in metrics and "val/psnr" in metrics
    notes = [line for line in capsys.readouterr().err.splitlines() if "LPIPS" in line]
    assert len(notes) == 1 and "LPIPS not computed: no alexnet ImageNet weights at" in notes[0], notes
    assert "alexnet-owt-7be5be79.pth" in notes[0] and "model.eval_lpips_weights" in notes[0], notes


def test_bad_eval_options_name_the_option(tmp_path, patch_loaders):
    with pytest.raises(ValueError, match="model.eval_tile"):
        make_module(stage=1, eval_tile=16, eval_tile_overlap=16)
    module = make_module(stage=1, eval_lpips_weights=str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="model.eval_lpips_weights: file .*missing.pth"):
        make_trainer(tmp_path).validate(module, patch_loaders[1], verbose=False)


def test_tiled_validation_of_a_large_image_stays_within_a_hundredth_of_a_db(tmp_path, photos):
    """A 96x96 LR image validated in 48-pixel tiles scores as the whole image does."""
    from salightning.data.transforms import benchmark_lr

    lr, hr = benchmark_lr(photos[0][None, :, :384, :384], 4)
    loader = torch.utils.data.DataLoader([{"lr": lr[0], "hr": hr[0], "name": "astronaut"}], batch_size=1)
    scores = {}
    for tile in (0, 48):
        module = make_module(stage=1, eval_tile=tile, eval_tile_overlap=16, eval_lpips=None)
        scores[tile] = make_trainer(tmp_path).validate(module, loader, verbose=False)[0]["val/psnr"]
    assert scores[48] == pytest.approx(scores[0], abs=0.01), scores


@pytest.mark.slow
def test_the_best_checkpoint_by_val_psnr_scores_its_val_psnr_in_evaluate(tmp_path, photos, capsys, monkeypatch):
    """Whole-image validation is evaluate's measurement: the checkpoint ModelCheckpoint kept for
    the highest val/psnr gets that PSNR from `salightning evaluate` on the validation folder."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = make_project(tmp_path / "user", photos)
    config = tiny_config(root, max_epochs=3)
    config["data"]["init_args"]["eval_patch_size"] = None
    config["model"]["eval_lpips"] = None
    config["trainer"]["callbacks"].append(
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": str(root / "run" / "checkpoints"), "monitor": "val/psnr", "mode": "max", "filename": "best"}}
    )
    path = write_config(root / "cfg.yaml", config)
    code, _, err = run_main(["fit", "--config", path], capsys)
    assert code == 0, err[-3000:]
    rows = [r for f in sorted((root / "run").rglob("metrics.csv")) for r in csv.DictReader(f.open()) if r.get("val/psnr")]
    assert len(rows) == 3, rows
    logged = max(float(r["val/psnr"]) for r in rows)

    out = tmp_path / "evaluation"
    best = root / "run" / "checkpoints" / "best.ckpt"
    code, _, err = run_main(["evaluate", "--ckpt_path", f"m={best}", "--test_sets", f"v={root / 'val'}", "--output", out, "--lpips", "none", "--no_bicubic"], capsys)
    assert code == 0, err[-3000:]
    evaluated = float(next(csv.DictReader((out / "results.csv").open()))["v/psnr"])
    assert logged == pytest.approx(evaluated, abs=0.01), (logged, evaluated)


def test_monitoring_lpips_without_its_weights_is_refused_before_training(tmp_path, patch_loaders, monkeypatch):
    from pytorch_lightning.callbacks import ModelCheckpoint

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))
    train, val = patch_loaders
    trainer = make_trainer(tmp_path, callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/lpips", mode="min")], enable_checkpointing=True)
    module = make_module(stage=1)
    with pytest.raises(ValueError, match="monitors val/lpips but validation LPIPS not computed"):
        trainer.fit(module, train, val)
    assert module.batches_seen == 0


def test_building_lpips_leaves_the_random_stream_of_training_alone(tmp_path):
    module = make_module(stage=1, eval_lpips_weights=str(_random_alexnet_file(tmp_path)))
    module.trainer = make_trainer(tmp_path)
    torch.manual_seed(7)
    module.setup("fit")
    assert module.eval_metrics["val"].lpips is not None
    drawn = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(drawn, torch.rand(3))
