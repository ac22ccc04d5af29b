"""Runs as users start them (issue 12): every shipped config on 2 gloo CPU processes through the
console script with its callbacks and loggers, run folders, SIGTERM, exact resume with workers.

Every subprocess runs in its own session under a hard timeout that kills its whole process group
and fails with the last lines of its output, so nothing here can hang.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

from salightning.checkpoints import load_checkpoint_file

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("salightning")
CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.yaml") if p.stem != "ddp")

# Reductions by override only: network widths, sizes, batches, the sample data.
RRDB = ["--model.generator.init_args.num_features", "8", "--model.generator.init_args.num_blocks", "1", "--model.generator.init_args.growth_channels", "4"]
SMALL_G = {
    "RRDBNet": RRDB,
    "SRResNet": ["--model.generator.init_args.num_features", "8", "--model.generator.init_args.num_blocks", "1"],
    "VSRResNet": ["--model.generator.init_args.frame_features", "4", "--model.generator.init_args.num_features", "8", "--model.generator.init_args.num_blocks", "1"],
}
SMALL_D = {
    "VGGStyleDiscriminator": ["--model.discriminator.init_args.num_features", "4", "--model.discriminator.init_args.input_size", "32"],
    "SRGANDiscriminator": ["--model.discriminator.init_args.num_features", "4"],
    "VSRResFeatGANDiscriminator": ["--model.discriminator.init_args.num_features", "4"],
    "UNetDiscriminatorSN": ["--model.discriminator.init_args.num_features", "4"],
}


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SALIGHTNING_RUN_DIR"))}
    env.update(OMP_NUM_THREADS="1", WANDB_MODE="disabled", PYTHONUNBUFFERED="1", **extra)
    return env


def run_cli(args: list[str], cwd: Path, timeout: float = 420, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.CompletedProcess:
    """The console script in its own process group, killed whole (all DDP ranks) at the timeout."""
    log = log or cwd / "cli.log"
    with open(log, "w") as out:
        process = subprocess.Popen([str(SCRIPT), *map(str, args)], cwd=cwd, env=env or cli_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
            pytest.fail(f"`salightning {' '.join(map(str, args[:3]))}` timed out after {timeout} s:\n{log.read_text()[-4000:]}")
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(args, process.returncode, log.read_text(), "")


def reduced_args(name: str, vgg_file: Path, alexnet_file: Path) -> list[str]:
    """The overrides that shrink a shipped config to seconds on 2 CPU processes."""
    config = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
    model, data = config["model"], config["data"]
    args = ["--config", REPO / "configs" / f"{name}.yaml", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
            "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false"]
    if not name.startswith("quickstart"):  # the quickstarts start from the shipped generator: keep its size
        args += SMALL_G[model["generator"]["class_path"].rsplit(".", 1)[1]]
        if model.get("discriminator"):
            args += SMALL_D[model["discriminator"]["class_path"].rsplit(".", 1)[1]]
    if str(model.get("pretrained_generator", "")).startswith(("pretrained/", "runs/")):
        args += ["--model.pretrained_generator", "null"]
    if (model.get("perceptual_loss") or {}).get("class_path", "").endswith(".PerceptualLoss"):  # VGG: weights from a file; DCT needs none
        args += ["--model.perceptual_loss.init_args.weights", vgg_file]
    if any((cb.get("init_args") or {}).get("monitor") == "val/lpips" for cb in config["trainer"].get("callbacks", [])):
        args += ["--model.eval_lpips_weights", alexnet_file]  # LPIPS's backbone, as a user provides ImageNet's
    video = data["class_path"].endswith("VideoSRDataModule")
    splits = ["train", "test"] if video else ["train_hr", "val_hr", "train_lr", "val_lr"]
    for key in splits:
        if key in data["init_args"]:
            args += [f"--data.init_args.{key}", "null"]
    # the discriminators' input size below; Real-ESRGAN's degradation needs 74 (its 21-tap blurs at x4)
    patch = 96 if model.get("degradation") else 32
    args += ["--data.init_args.patch_size", patch, "--data.init_args.batch_size", "2", "--data.init_args.samples_per_epoch", "8",
             "--data.init_args.eval_patch_size", patch, "--data.init_args.num_workers", "1"]
    if name == "quickstart":
        args += ["--model.discriminator.init_args.input_size", "32"]
    return args


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    """A torchvision VGG19 state dict (random weights) as a file, as a user provides ImageNet's."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "vgg19.pth"
    torch.save(torchvision.models.vgg19().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory) -> Path:
    """A torchvision AlexNet state dict (random weights), the backbone of the LPIPS the GAN configs monitor."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "alexnet.pth"
    torch.save(torchvision.models.alexnet().state_dict(), path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_every_shipped_config_trains_on_two_processes(name, tmp_path, vgg_file, alexnet_file):
    result = run_cli(["fit", *reduced_args(name, vgg_file, alexnet_file), "--trainer.default_root_dir", tmp_path / "exp"], cwd=tmp_path,
                     env=cli_env(SALIGHTNING_CACHE_DIR=str(tmp_path / "cache")))
    assert result.returncode == 0, result.stdout[-4000:]
    runs = sorted((tmp_path / "exp").iterdir())
    assert [r.name for r in runs] == ["version_0"], runs  # both ranks wrote into one run folder
    run = runs[0]
    assert (run / "checkpoints" / "last.ckpt").is_file() and list((run / "checkpoints").glob("best-*.ckpt"))
    assert (run / "logs" / "metrics.csv").is_file() and (run / "logs" / "config.yaml").is_file()
    assert list((run / "samples").glob("*.png"))  # ValidationPanels wrote on rank 0 without hanging
    ckpt = load_checkpoint_file(run / "checkpoints" / "last.ckpt")
    assert ckpt["salightning"]["batches_seen"] == 2  # 8 samples / (2 processes x batch 2)
    assert not (tmp_path / "runs").exists()  # nothing outside the experiment folder


def _quickstart(tmp: Path, *extra: str) -> list:
    return ["fit", "--config", REPO / "configs" / "quickstart.yaml", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--data.init_args.samples_per_epoch", "32", "--trainer.limit_val_batches", "1",
            "--trainer.default_root_dir", tmp / "exp", *extra]


@pytest.mark.slow
def test_reruns_get_their_own_folders_and_last_resumes_the_newest(tmp_path):
    env = cli_env(SALIGHTNING_CACHE_DIR=str(tmp_path / "cache"))
    assert run_cli(_quickstart(tmp_path, "--trainer.max_epochs", "1"), cwd=tmp_path, env=env).returncode == 0
    first = (tmp_path / "exp" / "version_0" / "checkpoints" / "last.ckpt").read_bytes()
    assert run_cli(_quickstart(tmp_path, "--trainer.max_epochs", "1", "--model.adversarial_weight", "0.01"), cwd=tmp_path, env=env).returncode == 0
    assert (tmp_path / "exp" / "version_0" / "checkpoints" / "last.ckpt").read_bytes() == first  # untouched by the rerun
    assert (tmp_path / "exp" / "version_1" / "checkpoints" / "last.ckpt").is_file()
    assert yaml.safe_load((tmp_path / "exp" / "version_0" / "logs" / "config.yaml").read_text())["model"]["adversarial_weight"] == 0.005
    result = run_cli(_quickstart(tmp_path, "--trainer.max_epochs", "2", "--ckpt_path", "last", "--model.adversarial_weight", "0.01"), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout[-3000:]
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["version_0", "version_1"]
    assert load_checkpoint_file(tmp_path / "exp" / "version_1" / "checkpoints" / "last.ckpt")["salightning"]["batches_seen"] == 8
    assert (tmp_path / "exp" / "version_0" / "checkpoints" / "last.ckpt").read_bytes() == first


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_exits_non_zero(tmp_path):
    env = cli_env(SALIGHTNING_CACHE_DIR=str(tmp_path / "cache"))
    log = tmp_path / "term.log"
    args = _quickstart(tmp_path, "--trainer.max_epochs", "50", "--data.init_args.num_workers", "1")
    with open(log, "w") as out:
        process = subprocess.Popen([str(SCRIPT), *map(str, args)], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        metrics = tmp_path / "exp" / "version_0" / "logs" / "metrics.csv"
        deadline = time.monotonic() + 300
        while not (metrics.is_file() and metrics.stat().st_size > 0):  # trained at least one epoch
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        rc = process.wait(60)  # the bound: a checkpoint and an exit within 60 s
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
    text = log.read_text()
    assert rc == 128 + signal.SIGTERM, text[-3000:]
    assert "stopped by SIGTERM" in text and "Traceback" not in text
    ckpt = load_checkpoint_file(tmp_path / "exp" / "version_0" / "checkpoints" / "last.ckpt")
    stopped_at = int(text.split("stopped by SIGTERM after batch ")[1].split(";")[0])
    assert ckpt["salightning"]["batches_seen"] == stopped_at > 0


def test_a_second_run_in_the_same_folder_is_refused(tmp_path):
    from salightning.runs import RunFolderInUseError, RunLock

    holder = subprocess.Popen([sys.executable, "-c", f"from salightning.runs import RunLock; import time; lock = RunLock({str(tmp_path)!r}); print('locked', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderInUseError, match=rf"in use by process {holder.pid} on"):
            RunLock(tmp_path)
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(30)
    RunLock(tmp_path).release()  # the OS released the dead holder's lock: a killed run resumes


def test_run_folder_choice(tmp_path, monkeypatch):
    from salightning.runs import choose_run_dir

    for var in ("SALIGHTNING_RUN_DIR", "SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_JOB_NAME", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    assert choose_run_dir(tmp_path) == tmp_path / "version_0"
    (tmp_path / "version_0" / "checkpoints").mkdir(parents=True)
    (tmp_path / "version_3").mkdir()
    assert choose_run_dir(tmp_path) == tmp_path / "version_4"
    assert choose_run_dir(tmp_path, "last") == tmp_path / "version_4"  # nothing to resume yet
    (tmp_path / "version_0" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert choose_run_dir(tmp_path, "last") == tmp_path / "version_0"
    assert choose_run_dir(tmp_path, str(tmp_path / "version_0" / "checkpoints" / "best-epoch=001.ckpt")) == tmp_path / "version_0"
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_JOB_NAME", "sa_esrgan")
    assert choose_run_dir(tmp_path) == tmp_path / "slurm-77"  # every rank of the job agrees
    monkeypatch.setenv("SALIGHTNING_RUN_DIR", str(tmp_path / "given"))
    assert choose_run_dir(tmp_path) == tmp_path / "given"


@pytest.mark.parametrize(
    "extra, names",
    [
        (["--trainer.devices", "4096", "--trainer.accelerator", "cpu"], ["--trainer.devices 4096", "CPU cores"]),
        (["--trainer.num_nodes", "2"], ["--trainer.num_nodes 2", "cluster launcher"]),
        (["--trainer.devices", "2", "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp"], ["--trainer.strategy ddp", "auto"]),
        (["--trainer.max_steps", "30"], ["--trainer.max_steps 30", "--model.max_batches"]),
    ],
    ids=["too-many-devices", "nodes-without-launcher", "plain-ddp-gan", "max-steps-in-gan"],
)
def test_bad_cluster_settings_are_one_line(extra, names, tmp_path, monkeypatch, capsys):
    from salightning.cli import main

    for var in ("SLURM_NTASKS", "WORLD_SIZE", "LSB_JOBID", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["salightning"])
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(REPO / "configs" / "quickstart.yaml"), "--trainer.default_root_dir", str(tmp_path / "exp"), *extra])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("salightning: error:") and len(err.strip().splitlines()) == 1, err
    assert all(n in err for n in names), err
    assert not (tmp_path / "exp").exists()  # refused before any run folder was made


FAIL_HELPERS = '''
import pytorch_lightning as pl


class FailAt(pl.Callback):
    def __init__(self, rank: int, batch: int) -> None:
        self.rank, self.batch = rank, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_rank == self.rank and batch_idx == self.batch:
            raise RuntimeError(f"injected failure on rank {self.rank}")
'''


@pytest.mark.slow
@pytest.mark.parametrize("rank", [0, 1])
def test_a_failing_rank_stops_every_rank_with_its_message(rank, tmp_path):
    (tmp_path / "failhelpers.py").write_text(FAIL_HELPERS)
    env = cli_env(SALIGHTNING_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(tmp_path))
    args = _quickstart(tmp_path, "--trainer.max_epochs", "3", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
                       "--trainer.callbacks+=failhelpers.FailAt", f"--trainer.callbacks.rank={rank}", "--trainer.callbacks.batch=1")
    log = tmp_path / "fail.log"
    with open(log, "w") as out:
        process = subprocess.Popen([str(SCRIPT), *map(str, args)], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        rc = process.wait(240)  # a hang would wait for the 30-minute process-group timeout
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # every rank is gone soon after
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"ranks still running 30 s after the main process ended:\n{log.read_text()[-3000:]}")
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(30)
    assert rc != 0 and f"injected failure on rank {rank}" in log.read_text(), log.read_text()[-3000:]


def test_wandb_variables_apply_unless_the_config_sets_a_value(tmp_path, monkeypatch):
    from salightning.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    logger = WandbLogger()
    assert logger.name == "from-env" and logger.save_dir == str(tmp_path / "wandb-dir")
    logger = WandbLogger(project="from-config", save_dir=str(tmp_path / "given"))
    assert logger.name == "from-config" and logger.save_dir == str(tmp_path / "given")
    monkeypatch.delenv("WANDB_PROJECT")
    assert WandbLogger().name == "salightning"
