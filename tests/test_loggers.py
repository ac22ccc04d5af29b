"""salightning.loggers.WandbLogger: online/offline/disabled decided from the environment, never the network.

No test here lets wandb go online: the decision tests only construct the logger (wandb.init runs
when ``.experiment`` is first used), and the runs that do start are disabled or offline.
"""

from __future__ import annotations

import glob
import os
from functools import partial

import pytest
import pytorch_lightning as pl
import torch

from salightning.loggers import WandbLogger, has_wandb_credentials, wandb_env_mode

_WANDB_ENV = ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "NETRC")
_FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, like a real W&B key


@pytest.fixture()
def clean_env(monkeypatch, tmp_path):
    """No W&B variables, a HOME without .netrc, and wandb's own files kept in tmp_path."""
    for name in _WANDB_ENV:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home" / name.lower()))
    monkeypatch.setenv("WANDB_CONSOLE", "off")  # keep wandb's hands off pytest's stdout/stderr
    monkeypatch.setenv("WANDB_SILENT", "true")
    return home


def test_no_credentials_runs_offline_without_log_model(clean_env, tmp_path, capsys):
    assert not has_wandb_credentials()
    logger = WandbLogger(save_dir=str(tmp_path / "runs"), name="quick")
    assert logger.offline and not logger.disabled
    assert logger._log_model is False
    assert logger._wandb_init["mode"] == "offline"
    assert logger._wandb_init["project"] == "salightning"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "offline" in err[0] and "no W&B credentials" in err[0]
    assert f"wandb sync {tmp_path / 'runs' / 'wandb'}" in err[0]
    # Lightning's own offline flag would rewrite WANDB_MODE for the whole process.
    assert "WANDB_MODE" not in os.environ


def test_api_key_runs_online_with_checkpoint_artifacts(clean_env, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_API_KEY", _FAKE_KEY)
    logger = WandbLogger(save_dir=str(tmp_path), group="sa_esrgan", tags=["lv", "x4"], entity="lab", id="abc123")
    assert not logger.offline
    assert logger._log_model is True
    assert "mode" not in logger._wandb_init
    init = logger._wandb_init
    assert (init["group"], init["tags"], init["entity"], init["id"]) == ("sa_esrgan", ["lv", "x4"], "lab", "abc123")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("host_in_netrc, base_url, online", [
    ("api.wandb.ai", None, True),
    ("wandb.example.org", None, False),
    ("wandb.example.org", "https://wandb.example.org", True),
])
def test_netrc_entry_counts_as_credentials(clean_env, monkeypatch, host_in_netrc, base_url, online):
    netrc_file = clean_env / ".netrc"
    netrc_file.write_text(f"machine {host_in_netrc}\n  login user\n  password {_FAKE_KEY}\n")
    netrc_file.chmod(0o600)
    if base_url is not None:
        monkeypatch.setenv("WANDB_BASE_URL", base_url)
    assert has_wandb_credentials() is online
    assert WandbLogger(save_dir=str(clean_env)).offline is (not online)


def test_netrc_variable_points_to_the_file(clean_env, tmp_path, monkeypatch):
    elsewhere = tmp_path / "creds"
    elsewhere.write_text(f"machine api.wandb.ai login user password {_FAKE_KEY}\n")
    elsewhere.chmod(0o600)
    assert not has_wandb_credentials()
    monkeypatch.setenv("NETRC", str(elsewhere))
    assert has_wandb_credentials()


@pytest.mark.parametrize("mode", ["offline", "dryrun", "disabled"])
def test_offline_environment_wins_over_credentials_and_arguments(clean_env, tmp_path, monkeypatch, capsys, mode):
    monkeypatch.setenv("WANDB_API_KEY", _FAKE_KEY)
    monkeypatch.setenv("WANDB_MODE", mode)
    logger = WandbLogger(save_dir=str(tmp_path), offline=False, log_model=True)
    assert logger.offline
    assert logger.disabled is (mode == "disabled")
    assert logger._log_model is False
    assert logger._wandb_init["mode"] == ("disabled" if mode == "disabled" else "offline")
    err = capsys.readouterr().err
    assert f"WANDB_MODE={mode}" in err and "checkpoints stay local" in err
    assert wandb_env_mode() == ("offline" if mode == "dryrun" else mode)


def test_explicit_offline_with_log_model_is_an_error(clean_env, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", _FAKE_KEY)
    with pytest.raises(ValueError, match="log_model"):
        WandbLogger(save_dir=str(tmp_path), offline=True, log_model="all")
    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    assert logger.offline and logger._log_model is False


def test_disabled_run_logs_without_touching_the_environment(clean_env, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    logger = WandbLogger(save_dir=str(tmp_path / "runs"), name="t")
    assert "disabled" in capsys.readouterr().err
    try:
        logger.log_hyperparams({"model": {"generator": {"class_path": "salightning.models.RRDBNet"}}})
        logger.log_metrics({"train/loss": 0.5}, step=1)
        logger.log_image(key="val/panels", images=[torch.rand(3, 8, 8)], caption=["LR | SR | HR"])
        assert os.environ["WANDB_MODE"] == "disabled"  # Lightning's offline path would set "dryrun"
    finally:
        logger.experiment.finish()
    assert not (tmp_path / "runs" / "wandb").exists()


def test_offline_run_writes_where_the_sync_hint_says(clean_env, tmp_path, capsys):
    logger = WandbLogger(save_dir=str(tmp_path / "runs"), name="offline-test")
    hint = capsys.readouterr().err.split("wandb sync ")[1].split()[0]
    try:
        logger.log_metrics({"train/loss": 0.25}, step=3)
    finally:
        logger.experiment.finish()
    runs = glob.glob(hint)
    assert len(runs) == 1, (hint, os.listdir(tmp_path / "runs" / "wandb"))
    assert glob.glob(os.path.join(runs[0], "*.wandb"))


def test_trains_with_the_module_and_the_panels_callback(clean_env, tmp_path, monkeypatch, patch_loaders, capsys):
    """A short stage-1 fit logging to a disabled W&B run: metrics, hyper-parameters and panels."""
    from salightning.callbacks import RunSummary, ValidationPanels
    from salightning.models import RRDBNet
    from salightning.training import SRGANModule

    monkeypatch.setenv("WANDB_MODE", "disabled")
    pl.seed_everything(0)
    module = SRGANModule(
        generator=RRDBNet(num_features=8, num_blocks=1, growth_channels=4, scale=4),
        optimizer_g=partial(torch.optim.Adam, lr=1e-3),
    )
    logger = WandbLogger(save_dir=str(tmp_path / "runs"))
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=2, logger=logger, callbacks=[ValidationPanels(num_images=2), RunSummary()],
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1,
        default_root_dir=tmp_path,
    )
    train, val = patch_loaders
    try:
        trainer.fit(module, train, val)
    finally:
        logger.experiment.finish()
    out = capsys.readouterr().out
    assert "W&B run" in out
    panels = list((tmp_path / "samples").glob("*.png"))  # <default_root_dir>/samples, the run folder
    assert panels, list(tmp_path.rglob("*"))
    assert os.environ["WANDB_MODE"] == "disabled"


def test_resume_run_adopts_a_checkpoints_run_id_only_when_none_was_given(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from salightning.loggers import WandbLogger

    fresh = WandbLogger(save_dir=str(tmp_path))
    assert fresh.resume_run("abc123")
    assert fresh.version == "abc123" and fresh._wandb_init["id"] == "abc123" and fresh._wandb_init["resume"] == "allow"
    named = WandbLogger(save_dir=str(tmp_path), id="mine")
    assert not named.resume_run("abc123")
    assert named.version == "mine"
