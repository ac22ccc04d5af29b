"""Stages chain: a stage-1 checkpoint as `pretrained_generator` brings its generator's class and
arguments (trusted classes only) and says what it loaded."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_GENERATOR, make_module, make_project, make_trainer, run_main, tiny_config, write_config
from salightning.models import RRDBNet


@pytest.fixture()
def stage1_ckpt(tmp_path, patch_loaders):
    train, _ = patch_loaders
    module = make_module(stage=1, ema_decay=0.5, eval_lpips=None)
    trainer = make_trainer(tmp_path, limit_val_batches=0)
    trainer.fit(module, train)
    path = tmp_path / "stage1.ckpt"
    trainer.save_checkpoint(path)
    return path, module


def test_a_stage1_checkpoint_brings_its_generator_and_says_what_it_loaded(stage1_ckpt, capsys):
    path, stage1 = stage1_ckpt
    stage2 = make_module(stage=2, generator=None, pretrained_generator=str(path), eval_lpips=None)
    assert isinstance(stage2.generator, RRDBNet) and stage2.generator.training
    assert {k: getattr(stage2.generator, k) for k in TINY_GENERATOR} == TINY_GENERATOR
    ema = stage1.generator_ema.module.state_dict()
    for key, value in stage2.generator.state_dict().items():
        torch.testing.assert_close(value, ema[key], rtol=0, atol=0)
    assert not all(torch.equal(v, stage1.generator.state_dict()[k]) for k, v in ema.items())  # EMA differs from the raw weights
    line = next(l for l in capsys.readouterr().err.splitlines() if "model.pretrained_generator" in l)
    assert f"{len(ema)} tensors (conv_first, body" in line and "the EMA generator of a Lightning checkpoint" in line
    assert "RRDBNet(in_channels=3, out_channels=3, num_features=8, num_blocks=1" in line and "class and arguments from the checkpoint" in line, line


def test_a_checkpoint_naming_a_class_outside_salightning_is_refused(stage1_ckpt, tmp_path):
    path, _ = stage1_ckpt
    ckpt = torch.load(path, weights_only=True)
    ckpt["generator_config"] = {"class_path": "evil.Network", "init_args": {}}
    bad = tmp_path / "bad.ckpt"
    torch.save(ckpt, bad)
    with pytest.raises(ValueError, match="'evil.Network', which is not part of salightning"):
        make_module(stage=2, generator=None, pretrained_generator=str(bad))


def test_without_a_generator_a_plain_state_dict_is_refused_with_what_to_give(tmp_path):
    plain = tmp_path / "plain.pth"
    torch.save(RRDBNet(**TINY_GENERATOR).state_dict(), plain)
    with pytest.raises(ValueError, match="records no generator .* give model.generator"):
        make_module(stage=2, generator=None, pretrained_generator=str(plain))
    with pytest.raises(ValueError, match="model.generator is required"):
        make_module(stage=2, generator=None)


@pytest.mark.slow
def test_stage2_from_the_command_line_without_generator_settings(stage1_ckpt, tmp_path, photos, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    path, _ = stage1_ckpt
    root = make_project(tmp_path / "user", photos)
    config = tiny_config(root, max_epochs=1)
    del config["model"]["generator"]
    config["model"]["pretrained_generator"] = str(path)
    code, _, err = run_main(["fit", "--config", write_config(root / "cfg.yaml", config)], capsys)
    assert code == 0, err[-3000:]
    assert "class and arguments from the checkpoint" in err
    assert (root / "run" / "checkpoints" / "last.ckpt").is_file()
