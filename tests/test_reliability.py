"""Reliability (issue 9): kills and resumes, atomic checkpoints, untrusted checkpoints, faults.

What each test proves is listed in docs/reliability.md. The ``slow`` tests run the real
``salightning`` console script in subprocesses and kill it with signals; the others run in
this process on tiny networks and real photos.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from conftest import (
    TINY_GENERATOR,
    fit_style_checkpoint,
    make_module,
    make_project,
    make_trainer,
    run_in_group,
    run_main,
    save_png,
    tiny_config,
    tree_digest,
    write_config,
)

from salightning import checkpoints as checkpoint_files
from salightning.callbacks import WandbRunId
from salightning.checkpoint_io import SafeCheckpointIO
from salightning.checkpoints import load_checkpoint_file
from salightning.data import ImageSRDataModule
from salightning.models import RRDBNet
from salightning.checkpoints import load_pretrained
from salightning.checkpoints import load_generator
from salightning.training import TrainingDiverged

SCRIPT = Path(sys.executable).with_name("salightning")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Exact equality of nested checkpoint content (tensors bit for bit)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    # LightningCLI warns when sys.argv has arguments besides the ones it is given (pytest's).
    monkeypatch.setattr(sys, "argv", ["salightning"])


# --------------------------------------------------------------------------------------------
# Kill -9 and resume through the console script
# --------------------------------------------------------------------------------------------

# Callbacks the subprocesses load from a test folder (--trainer.callbacks+=...). PauseAt parks the
# run at a known batch so the SIGKILL lands at a known point (a sleeping process dies exactly
# like a computing one); RecordRNG writes a digest of the global RNG states that each training batch starts with.
HELPERS = '''
import hashlib, json, os, random, time
import numpy as np
import pytorch_lightning as pl
import torch


class PauseAt(pl.Callback):
    def __init__(self, epoch: int, batch: int, flag: str) -> None:
        self.epoch, self.batch, self.flag = epoch, batch, flag

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            # Written under another name and renamed: the parent never reads a half-written flag.
            with open(self.flag + ".tmp", "w") as f:
                f.write(str(pl_module.batches_seen))
            os.replace(self.flag + ".tmp", self.flag)
            time.sleep(3600)


class HoldAt(pl.Callback):
    """Parks the run at a point of a phase (writes ``flag``) until ``go`` exists: the test signals
    the process group meanwhile. Phases: train, sanity, val (fit's validation), setup, teardown."""

    def __init__(self, phase: str, flag: str, go: str, epoch: int = 0, batch: int = 0) -> None:
        self.phase, self.flag, self.go, self.epoch, self.batch = phase, flag, go, epoch, batch

    def _hold(self) -> None:
        with open(self.flag + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(self.flag + ".tmp", self.flag)
        while not os.path.exists(self.go):  # a signal interrupts the sleep, its handler runs, the wait goes on
            time.sleep(0.02)

    def setup(self, trainer, pl_module, stage):
        if self.phase == "setup":
            self._hold()

    def teardown(self, trainer, pl_module, stage):
        if self.phase == "teardown":
            self._hold()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.phase == "train" and (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            self._hold()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        sanity = trainer.sanity_checking
        if (self.phase == "sanity" and sanity) or (self.phase == "val" and not sanity and trainer.current_epoch == self.epoch):
            self._hold()

    def on_validation_end(self, trainer, pl_module):
        if self.phase == "val_end" and not trainer.sanity_checking and trainer.current_epoch == self.epoch:
            self._hold()


class RecordRNG(pl.Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        state = np.random.get_state()
        h = hashlib.sha256(torch.get_rng_state().numpy().tobytes())
        h.update(state[1].tobytes() + repr(state[2:]).encode() + repr(random.getstate()).encode())
        with open(self.path, "a") as f:
            f.write(json.dumps({"epoch": trainer.current_epoch, "batch": batch_idx, "rng": h.hexdigest()}) + "\\n")
        # Draw, as user code with random degradations or dropout would: the states move.
        torch.rand(1), np.random.rand(), random.random()
'''


def _env(helpers_dir: Path, **extra: str) -> dict[str, str]:
    # Without the variables of a real SLURM job the tests may run in: Lightning would detect it.
    outside = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return dict(
        outside,
        PYTHONPATH=os.pathsep.join(filter(None, [str(helpers_dir), os.environ.get("PYTHONPATH")])),
        OMP_NUM_THREADS="1",  # the same thread count in every run: bitwise-comparable float sums
        WANDB_MODE="disabled",
        **extra,
    )


def _fit(project: Path, *extra: str) -> list[str]:
    return [str(SCRIPT), "fit", "--config", str(project / "config.yaml"), *extra]


def _record_rng(project: Path) -> list[str]:
    return ["--trainer.callbacks+=relhelpers.RecordRNG", f"--trainer.callbacks.path={project / 'rng.jsonl'}"]


def _pause_at(flag: Path, epoch: int, batch: int) -> list[str]:
    return [
        "--trainer.callbacks+=relhelpers.PauseAt",
        f"--trainer.callbacks.epoch={epoch}",
        f"--trainer.callbacks.batch={batch}",
        f"--trainer.callbacks.flag={flag}",
    ]


def _wait_for(condition, process: subprocess.Popen, log: Path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the run ended (rc {process.returncode}) before the kill point:\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for the kill point:\n{log.read_text()[-4000:]}")
        time.sleep(0.05)


def _kill_if_running(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(60)


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL whatever is left of a process group started with ``start_new_session`` (its data workers too)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.wait(60)


def _rng_digests(project: Path) -> list[dict]:
    return [json.loads(line) for line in (project / "rng.jsonl").read_text().splitlines()]


def _last(project: Path) -> dict[str, Any]:
    return load_checkpoint_file(project / "run" / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, photos) -> Path:
    """The uninterrupted 3-epoch run (a data worker, as the shipped configs have) the killed and
    stopped runs are compared with; its project folder."""
    root = tmp_path_factory.mktemp("straight")
    (root / "relhelpers.py").write_text(HELPERS)
    straight = make_project(root / "straight", photos)
    write_config(straight / "config.yaml", tiny_config(straight, num_workers=1))
    with open(root / "straight.log", "w") as log:
        done = run_in_group(_fit(straight, *_record_rng(straight)), env=_env(root), cwd=root, stdout=log, stderr=subprocess.STDOUT, timeout=300)
    assert done.returncode == 0, (root / "straight.log").read_text()[-4000:]
    return straight


@pytest.fixture(scope="module", params=["epoch-end", "mid-epoch"])
def resume_runs(request, tmp_path_factory, photos, straight_run) -> SimpleNamespace:
    """The run of :func:`straight_run` SIGKILLed in epoch 1 after batch 6, then resumed with
    ``--ckpt_path last``. "epoch-end": the last checkpoint is from the end of epoch 0 (batch 4);
    "mid-epoch": ``LastCheckpoint`` writes one every 5 batches, the last after batch 5 (epoch 1,
    batch 0), so the data order must resume in the middle of epoch 1."""
    root = tmp_path_factory.mktemp("resume")
    (root / "relhelpers.py").write_text(HELPERS)
    env = _env(root)
    killed = make_project(root / "killed", photos)
    config = tiny_config(killed, num_workers=1)
    if request.param == "mid-epoch":
        config["trainer"]["callbacks"].append({"class_path": "salightning.callbacks.LastCheckpoint", "init_args": {"every_n_batches": 5}})
    write_config(killed / "config.yaml", config)
    flag = killed / "paused"
    with contextlib.ExitStack() as stack:
        logs = {name: stack.enter_context(open(root / f"{name}.log", "w")) for name in ("killed", "resumed")}
        b = subprocess.Popen(
            _fit(killed, *_record_rng(killed), *_pause_at(flag, epoch=1, batch=1)), env=env, cwd=root, stdout=logs["killed"], stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.callback(_kill_group, b)
        _wait_for(flag.exists, b, root / "killed.log")
        at_kill = SimpleNamespace(batches_seen=int(flag.read_text()), last=_last(killed))
        os.kill(b.pid, signal.SIGKILL)
        assert b.wait(60) == -signal.SIGKILL
        resumed = run_in_group(
            _fit(killed, *_record_rng(killed), "--ckpt_path", "last"),
            env=env, cwd=root, stdout=logs["resumed"], stderr=subprocess.STDOUT, timeout=300,
        )
    assert resumed.returncode == 0, (root / "resumed.log").read_text()[-4000:]
    return SimpleNamespace(root=root, straight=straight_run, killed=killed, at_kill=at_kill, resumed_log=(root / "resumed.log").read_text(), kind=request.param)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_last_ends_with_the_uninterrupted_weights(resume_runs):
    r = resume_runs
    # The kill point: mid-epoch, two batches after the last checkpoint (end of epoch 0), with
    # the beta calibration half done and the LR milestone still ahead.
    assert r.at_kill.batches_seen == 6
    before = r.at_kill.last
    resumed_at = 5 if r.kind == "mid-epoch" else 4
    assert before["salightning"]["batches_seen"] == resumed_at and before["epoch"] == (resumed_at - 1) // 4
    assert before["salightning"]["sa_balance"]["calibrated"] is False and before["salightning"]["sa_balance"]["count"] == resumed_at
    # The milestone (after batch 5) is still ahead of the epoch-end checkpoint, just behind the mid-epoch one.
    assert before["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(2e-3 if resumed_at < 5 else 1e-3)
    assert "Restored all states from the checkpoint" in r.resumed_log and "last.ckpt" in r.resumed_log
    assert "not resumable" not in r.resumed_log  # Lightning's warning: the training loader resumes exactly

    a, b = _last(r.straight), _last(r.killed)
    assert a["salightning"]["batches_seen"] == b["salightning"]["batches_seen"] == 12
    assert same(a["salightning"], b["salightning"])  # batch counter, non-finite count, beta calibration sums
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"]) == (2, 24)
    # beta was calibrated after the resume, identically; the LR halved after the resume, identically
    assert float(b["state_dict"]["objective.pixel_loss.beta2"]) > 0
    assert torch.equal(a["state_dict"]["objective.pixel_loss.beta2"], b["state_dict"]["objective.pixel_loss.beta2"])
    for i in (0, 1):
        assert b["optimizer_states"][i]["param_groups"][0]["lr"] == a["optimizer_states"][i]["param_groups"][0]["lr"] == pytest.approx(1e-3)
    # Generator, discriminator, EMA generator (and its n_averaged), BatchNorm statistics: bit for bit.
    for prefix in ("generator.", "discriminator.", "generator_ema.module."):
        assert any(k.startswith(prefix) for k in a["state_dict"]), prefix
    different = [k for k in a["state_dict"] if not same(a["state_dict"][k], b["state_dict"].get(k))]
    assert not different, different[:10]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    # Adam moments and step counts, scheduler states.
    assert same(a["optimizer_states"], b["optimizer_states"])
    assert same(a["lr_schedulers"], b["lr_schedulers"])


@pytest.mark.slow
def test_resume_restores_the_global_rng_states(resume_runs):
    """Each training batch after the resume starts from the RNG states it had in the uninterrupted
    run (what dropout or random degradations in user code would draw from)."""
    straight = {(d["epoch"], d["batch"]): d["rng"] for d in _rng_digests(resume_runs.straight)}
    # The killed run recorded batches 0-3 of epoch 0 and 0-1 of epoch 1; the resumed run, the
    # last 8 (from the epoch-end checkpoint) or 7 (from the one after batch 5).
    n = 7 if resume_runs.kind == "mid-epoch" else 8
    resumed = {(d["epoch"], d["batch"]): d["rng"] for d in _rng_digests(resume_runs.killed)[-n:]}
    assert sorted(resumed) == [(e, b) for e in (1, 2) for b in range(4)][8 - n :]
    assert len(set(straight.values())) == 12  # the states move batch to batch (RecordRNG draws)
    assert resumed == {k: straight[k] for k in resumed}


# --------------------------------------------------------------------------------------------
# Stopping by signal, however it arrives: to the whole process group (Ctrl-C in a terminal,
# `timeout`, `kill -- -PGID`, scancel), data worker included, in every phase
# --------------------------------------------------------------------------------------------


def _hold_at(flag: Path, go: Path, phase: str, epoch: int = 0, batch: int = 0) -> list[str]:
    return [
        "--trainer.callbacks+=relhelpers.HoldAt", f"--trainer.callbacks.phase={phase}", f"--trainer.callbacks.flag={flag}",
        f"--trainer.callbacks.go={go}", f"--trainer.callbacks.epoch={epoch}", f"--trainer.callbacks.batch={batch}",
    ]


def _start_held(root: Path, project: Path, phase: str, *extra: str, epoch: int = 0, batch: int = 0) -> SimpleNamespace:
    """Start ``fit`` in a session of its own, to be held at ``phase`` (see :class:`HoldAt`)."""
    held = SimpleNamespace(flag=project / f"held-{phase}", go=project / f"go-{phase}", log=root / f"{project.name}-{phase}.log")
    with open(held.log, "w") as out:
        held.process = subprocess.Popen(
            _fit(project, *_hold_at(held.flag, held.go, phase, epoch, batch), *extra), env=_env(root), cwd=root, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    return held


def _signal_held(held: SimpleNamespace, signum: int) -> tuple[int, str]:
    """Once the run is held, send ``signum`` to its whole process group (as a terminal, ``timeout``
    or a scheduler does) and let it go on; (exit status, output)."""
    try:
        _wait_for(held.flag.exists, held.process, held.log)
        os.killpg(held.process.pid, signum)
        held.go.touch()
        rc = held.process.wait(120)
    finally:
        _kill_group(held.process)
    return rc, held.log.read_text()


def _signal_group_during(root: Path, project: Path, phase: str, signum: int, *extra: str, epoch: int = 0, batch: int = 0) -> tuple[int, str]:
    return _signal_held(_start_held(root, project, phase, *extra, epoch=epoch, batch=batch), signum)


def _resume_all(root: Path, projects: list[Path], timeout: float = 300) -> None:
    """``fit --ckpt_path last`` in each project at once, each in its own session (killed whole at the timeout)."""
    processes = []
    try:
        for project in projects:
            with open(root / f"{project.name}-resumed.log", "w") as out:
                processes.append(subprocess.Popen(_fit(project, "--ckpt_path", "last"), env=_env(root), cwd=root, stdout=out,
                                                  stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + timeout
        for project, process in zip(projects, processes):
            try:
                rc = process.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"the resume of {project.name} timed out:\n{(root / f'{project.name}-resumed.log').read_text()[-4000:]}")
            assert rc == 0, (root / f"{project.name}-resumed.log").read_text()[-4000:]
    finally:
        for process in processes:
            _kill_group(process)


def _assert_one_line(text: str, *words: str) -> None:
    assert "Traceback" not in text and "DataLoader worker" not in text, text[-4000:]
    lines = [line for line in text.splitlines() if "stopped by" in line]
    assert len(lines) == 1, text[-4000:]
    assert all(word in lines[0] for word in words), lines[0]


@pytest.fixture(scope="module", params=["SIGTERM", "SIGINT"])
def group_stopped(request, tmp_path_factory, photos) -> SimpleNamespace:
    """The run of :func:`straight_run`, its process group signalled after batch 6 (epoch 1, batch 1)
    while the data worker prefetches, then resumed with ``--ckpt_path last``."""
    root = tmp_path_factory.mktemp("group")
    (root / "relhelpers.py").write_text(HELPERS)
    project = make_project(root / "stopped", photos)
    write_config(project / "config.yaml", tiny_config(project, num_workers=1))
    signum = signal.Signals[request.param]
    rc, text = _signal_group_during(root, project, "train", signum, *_record_rng(project), epoch=1, batch=1)
    at_stop = _last(project)
    with open(root / "resumed.log", "w") as log:
        resumed = run_in_group(_fit(project, *_record_rng(project), "--ckpt_path", "last"), env=_env(root), cwd=root, stdout=log, stderr=subprocess.STDOUT, timeout=300)
    assert resumed.returncode == 0, (root / "resumed.log").read_text()[-4000:]
    return SimpleNamespace(signum=signum, rc=rc, text=text, at_stop=at_stop, project=project)


@pytest.mark.slow
def test_a_signal_to_the_process_group_stops_with_a_checkpoint_and_a_non_zero_exit(group_stopped):
    g = group_stopped
    assert g.rc == 128 + g.signum, g.text[-4000:]
    _assert_one_line(g.text, g.signum.name, "after batch 6")
    assert g.at_stop["salightning"]["batches_seen"] == 6  # the batch in progress was finished, then saved


@pytest.mark.slow
def test_a_run_stopped_by_a_group_signal_resumes_bit_identically(group_stopped, straight_run):
    a, b = _last(straight_run), _last(group_stopped.project)
    assert b["salightning"]["batches_seen"] == 12
    assert same(a["state_dict"], b["state_dict"])
    assert same(a["optimizer_states"], b["optimizer_states"])
    assert same(a["salightning"], b["salightning"])


OUTSIDE_TRAINING = {  # phase -> what the line says
    "setup": "outside training; no checkpoint written",
    "sanity": "during the sanity check, before training started; nothing was trained",
    "teardown": "after training had ended; the run's checkpoints are complete",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "phase, signum",
    [("setup", signal.SIGTERM), ("sanity", signal.SIGTERM), ("sanity", signal.SIGINT), ("teardown", signal.SIGTERM)],
    ids=["setup-SIGTERM", "sanity-SIGTERM", "sanity-SIGINT", "teardown-SIGTERM"],
)
def test_a_group_signal_outside_training_exits_non_zero_with_one_line(phase, signum, tmp_path, photos):
    (tmp_path / "relhelpers.py").write_text(HELPERS)
    project = make_project(tmp_path / "project", photos)
    write_config(project / "config.yaml", tiny_config(project, max_epochs=1, num_workers=1))
    rc, text = _signal_group_during(tmp_path, project, phase, signum)
    assert rc == 128 + signum, text[-4000:]  # never 0: a requeue script would take the job as done
    _assert_one_line(text, signum.name, OUTSIDE_TRAINING[phase])
    checkpoints = sorted((project / "run" / "checkpoints").glob("*.ckpt")) if (project / "run" / "checkpoints").is_dir() else []
    assert [p.name for p in checkpoints] == (["epoch=0-step=8.ckpt", "last.ckpt"] if phase == "teardown" else [])


# --------------------------------------------------------------------------------------------
# A kill during validation: the resumed run runs that validation
# --------------------------------------------------------------------------------------------


def _shipped_callbacks(project: Path) -> list[dict[str, Any]]:
    """The checkpoint callbacks of the shipped configs: the best by val/loss, last.ckpt every epoch,
    and LastCheckpoint, here every 4 batches (an epoch): rewritten at the epoch's last batch,
    just before its validation."""
    folder = str(project / "run" / "checkpoints")
    return [
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": {"dirpath": folder, "monitor": "val/loss", "mode": "min", "filename": "best-{epoch:03d}"}},
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": {"dirpath": folder, "filename": "last", "enable_version_counter": False}},
        {"class_path": "salightning.callbacks.LastCheckpoint", "init_args": {"every_n_batches": 4}},
    ]


def _validation_rows(project: Path) -> list[dict[str, str]]:
    import csv

    rows = []
    for path in sorted((project / "run").rglob("metrics.csv")):
        with open(path) as f:
            rows += [{k: v for k, v in row.items() if v != "" and (k.startswith("val/") or k in ("epoch", "step"))} for row in csv.DictReader(f) if row.get("val/loss")]
    return sorted(rows, key=lambda r: (int(r["epoch"]), int(r["step"])))


@pytest.fixture(scope="module")
def killed_in_validation(tmp_path_factory, photos) -> SimpleNamespace:
    """Two epochs with the shipped configs' checkpoints: uninterrupted; SIGKILLed during epoch 0's
    validation (last.ckpt is from the epoch's last batch); stopped by SIGTERM to the group during
    it and after its metrics are logged; each interrupted one resumed with ``--ckpt_path last``."""
    root = tmp_path_factory.mktemp("valkill")
    (root / "relhelpers.py").write_text(HELPERS)
    env = _env(root)
    projects = {name: make_project(root / name, photos) for name in ("straight", "killed", "stopped", "late")}
    for project in projects.values():
        config = tiny_config(project, max_epochs=2, num_workers=1)
        config["trainer"]["callbacks"] = _shipped_callbacks(project)
        write_config(project / "config.yaml", config)
    killed, stopped, late = projects["killed"], projects["stopped"], projects["late"]
    with contextlib.ExitStack() as stack:
        straight_log = stack.enter_context(open(root / "straight.log", "w"))
        a = subprocess.Popen(_fit(projects["straight"]), env=env, cwd=root, stdout=straight_log, stderr=subprocess.STDOUT, start_new_session=True)
        stack.callback(_kill_group, a)
        # SIGKILL during that validation; SIGTERM to the group during it (it stops there) and once its
        # metrics are logged (it stops after the next training batch). All at once: 2 cores.
        held = {name: _start_held(root, projects[name], phase, epoch=0) for name, phase in (("killed", "val"), ("stopped", "val"), ("late", "val_end"))}
        for run in held.values():
            stack.callback(_kill_group, run.process)
        _wait_for(held["killed"].flag.exists, held["killed"].process, held["killed"].log)
        at_kill = _last(killed)
        os.killpg(held["killed"].process.pid, signal.SIGKILL)
        held["killed"].process.wait(60)
        stop_rc, stop_text = _signal_held(held["stopped"], signal.SIGTERM)
        at_stop = _last(stopped)
        late_rc, late_text = _signal_held(held["late"], signal.SIGTERM)
        _resume_all(root, [killed, stopped, late])
        assert a.wait(300) == 0, (root / "straight.log").read_text()[-4000:]
    return SimpleNamespace(
        straight=projects["straight"], killed=killed, at_kill=at_kill, stopped=stopped, stop_rc=stop_rc, stop_text=stop_text, at_stop=at_stop,
        late=late, late_rc=late_rc, late_text=late_text,
    )


def _same_best_and_rows(straight: Path, resumed: Path) -> None:
    best = {p.name for p in (straight / "run" / "checkpoints").glob("best-*.ckpt")}
    assert {p.name for p in (resumed / "run" / "checkpoints").glob("best-*.ckpt")} == best and len(best) == 1
    (name,) = best
    a, b = (load_checkpoint_file(p / "run" / "checkpoints" / name) for p in (straight, resumed))
    assert same(a["state_dict"], b["state_dict"])
    rows = _validation_rows(straight)
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert _validation_rows(resumed) == rows


@pytest.mark.slow
def test_a_kill_during_validation_resumes_to_the_same_best_checkpoint_and_metrics(killed_in_validation):
    r = killed_in_validation
    assert r.at_kill["salightning"]["batches_seen"] == 4 and r.at_kill["salightning"]["validation_pending"] is True
    _same_best_and_rows(r.straight, r.killed)


@pytest.mark.slow
def test_a_group_signal_during_validation_stops_there_and_the_resume_validates_again(killed_in_validation):
    r = killed_in_validation
    assert r.stop_rc == 128 + signal.SIGTERM, r.stop_text[-4000:]
    _assert_one_line(r.stop_text, "SIGTERM", "during validation (epoch 0)", "checkpoint written")
    assert r.at_stop["salightning"]["batches_seen"] == 4 and r.at_stop["salightning"]["validation_pending"] is True
    _same_best_and_rows(r.straight, r.stopped)


@pytest.mark.slow
def test_a_group_signal_after_the_validation_metrics_stops_after_the_next_batch_and_resumes_exactly(killed_in_validation):
    r = killed_in_validation
    assert r.late_rc == 128 + signal.SIGTERM, r.late_text[-4000:]
    _assert_one_line(r.late_text, "SIGTERM", "after batch 5", "checkpoint written")
    _same_best_and_rows(r.straight, r.late)
    a, b = _last(r.straight), _last(r.late)
    assert same(a["state_dict"], b["state_dict"]) and same(a["optimizer_states"], b["optimizer_states"])


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory, photos) -> SimpleNamespace:
    """A run under a simulated SLURM job: SIGUSR1 at a known batch (what ``--signal=SIGUSR1@90``
    sends), then SIGKILL (the end of the allocation), then the requeued job, started the same way."""
    root = tmp_path_factory.mktemp("slurm")
    (root / "relhelpers.py").write_text(HELPERS)
    fake_bin = root / "bin"
    fake_bin.mkdir()
    (fake_bin / "scontrol").write_text('#!/bin/sh\necho "$@" >> "$SCONTROL_LOG"\n')
    (fake_bin / "scontrol").chmod(0o755)
    slurm = {
        "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "sa_esrgan",
        "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "node1",
    }
    env = _env(root, PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}", SCONTROL_LOG=str(root / "scontrol.log"), **slurm)
    project = make_project(root / "project", photos)
    write_config(project / "config.yaml", tiny_config(project))
    # The run folder of a SLURM batch job is named after the job: the requeued job continues it.
    flag, hpc = project / "paused", project / "run" / "slurm-4242" / "hpc_ckpt_1.ckpt"
    with open(root / "first.log", "w") as log:
        first = subprocess.Popen(_fit(project, *_pause_at(flag, epoch=1, batch=1)), env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for(flag.exists, first, root / "first.log")
            os.kill(first.pid, signal.SIGUSR1)
            _wait_for(lambda: hpc.exists() and (root / "scontrol.log").exists(), first, root / "first.log")
            os.kill(first.pid, signal.SIGKILL)
            first.wait(60)
        finally:
            _kill_if_running(first)
    hpc_state = load_checkpoint_file(hpc)["salightning"]
    with open(root / "requeued.log", "w") as log:
        requeued = run_in_group(_fit(project), env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, timeout=300)
    requeued_log = (root / "requeued.log").read_text()
    assert requeued.returncode == 0, requeued_log[-4000:]
    return SimpleNamespace(
        project=project, hpc_state=hpc_state, scontrol=(root / "scontrol.log").read_text(), requeued_log=requeued_log
    )


@pytest.mark.slow
def test_slurm_sigusr1_saves_an_hpc_checkpoint_requeues_and_the_requeued_job_resumes(slurm_run):
    assert slurm_run.scontrol.split() == ["requeue", "4242"]
    assert slurm_run.hpc_state["batches_seen"] == 6  # written at the signal, mid-epoch
    assert "hpc_ckpt_1.ckpt" in slurm_run.requeued_log and "Restored all states" in slurm_run.requeued_log
    final = _last(slurm_run.project)
    assert final["salightning"]["batches_seen"] == 12 and final["global_step"] == 24
    assert final["salightning"]["sa_balance"]["calibrated"] is True
    assert all(torch.isfinite(v).all() for v in final["state_dict"].values() if v.is_floating_point())


@pytest.mark.slow
def test_mid_epoch_hpc_resume_is_bit_exact(slurm_run, resume_runs):
    # The data order resumes mid-epoch (EpochSampler follows the trainer's batch count).
    a, b = _last(resume_runs.straight), _last(slurm_run.project)
    assert same(a["state_dict"], b["state_dict"])
    assert same(a["optimizer_states"], b["optimizer_states"])


# --------------------------------------------------------------------------------------------
# Atomic checkpoint writes
# --------------------------------------------------------------------------------------------


def _ckpt(version: int, numel: int = 1000) -> dict[str, Any]:
    return {"state_dict": {"w": torch.full((numel,), float(version))}, "version": version, "epoch": version}


def _temporaries(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


class _FullDisk(io.FileIO):
    """A file on a disk that fills up after ``room`` bytes: ENOSPC, as ``write(2)`` reports it."""

    room = 4096

    def write(self, data) -> int:
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


@pytest.mark.parametrize("where", ["write", "fsync", "rename"])
def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch, where):
    target = tmp_path / "checkpoints" / "last.ckpt"
    io_ = SafeCheckpointIO()
    io_.save_checkpoint(_ckpt(1), target)
    before = target.read_bytes()
    if where == "write":
        monkeypatch.setattr(checkpoint_files, "open", lambda path, mode: _FullDisk(path, mode), raising=False)
        code = errno.ENOSPC
    elif where == "fsync":
        def fsync(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", fsync)
        code = errno.ENOSPC
    else:
        def replace(src, dst):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

        monkeypatch.setattr(os, "replace", replace)
        code = errno.EACCES
    with pytest.raises(OSError) as info:
        io_.save_checkpoint(_ckpt(2, numel=100_000), target)
    monkeypatch.undo()
    assert info.value.errno == code
    assert str(target) in str(info.value) and "earlier checkpoints are intact" in str(info.value)
    assert target.read_bytes() == before
    assert load_checkpoint_file(target)["version"] == 1
    assert _temporaries(target.parent) == []


def test_non_io_error_during_a_write_is_raised_unchanged_and_leaves_nothing(tmp_path):
    target = tmp_path / "last.ckpt"
    io_ = SafeCheckpointIO()
    io_.save_checkpoint(_ckpt(1), target)
    before = target.read_bytes()
    with pytest.raises(Exception, match="pickle|local object|Can't") as info:
        io_.save_checkpoint({"state_dict": {}, "bad": lambda: None}, target)  # not serialisable
    assert not isinstance(info.value, OSError)
    assert target.read_bytes() == before and _temporaries(tmp_path) == []


KILL_DURING_WRITE = '''
import io, sys, time
from pathlib import Path
import torch
import salightning.checkpoint_io as checkpoint_io
import salightning.checkpoints as checkpoint_files

target, flag = Path(sys.argv[1]), Path(sys.argv[2])


class Stalls(io.FileIO):
    # Parks the writer half-way through the file, so the parent's SIGKILL lands mid-write.
    def write(self, data):
        n = super().write(data)
        if self.tell() > 8 * 2**20 and not flag.exists():
            flag.with_suffix(".tmp").write_text(str(self.tell()))  # renamed: never read half-written
            flag.with_suffix(".tmp").replace(flag)
            time.sleep(3600)
        return n


checkpoint_files.open = lambda path, mode: Stalls(path, mode)
ckpt = {"state_dict": {f"w{i}": torch.full((2**20,), 2.0) for i in range(8)}, "version": 2, "epoch": 2}  # 8 x 4 MiB
checkpoint_io.SafeCheckpointIO().save_checkpoint(ckpt, target)
'''


@pytest.mark.slow
@pytest.mark.parametrize("existing", [True, False], ids=["over-last", "first-write"])
def test_sigkill_during_a_checkpoint_write(tmp_path, existing):
    folder = tmp_path / "checkpoints"
    target = folder / "last.ckpt"
    io_ = SafeCheckpointIO()
    if existing:
        io_.save_checkpoint(_ckpt(1), target)
    before = tree_digest(folder) if existing else {}
    script, flag = tmp_path / "writer.py", tmp_path / "half-written"
    script.write_text(KILL_DURING_WRITE)
    with open(tmp_path / "writer.log", "w") as log:
        writer = subprocess.Popen([sys.executable, str(script), str(target), str(flag)], stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for(flag.exists, writer, tmp_path / "writer.log", timeout=120)
            os.kill(writer.pid, signal.SIGKILL)
            writer.wait(60)
        finally:
            _kill_if_running(writer)
    (partial,) = _temporaries(folder)  # the half-written file the kill left behind...
    assert partial.name == f".partial-write.{writer.pid}.tmp" and int(flag.read_text()) <= partial.stat().st_size < 32 * 2**20
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint_file(partial)
    # ...never under the checkpoint's name: the previous last.ckpt, intact, or none at all.
    if existing:
        assert {k: v for k, v in tree_digest(folder).items() if k != str(partial)} == before
        assert load_checkpoint_file(target)["version"] == 1
    else:
        assert not target.exists()
    # `--ckpt_path last` never picks the temporary file (Lightning matches last*.ckpt only).
    found = pl.callbacks.ModelCheckpoint(dirpath=folder)._find_last_checkpoints(None)
    assert found == ({str(target)} if existing else set())
    # The next successful checkpoint write in the folder removes what the killed writer left.
    io_.save_checkpoint(_ckpt(3), folder / "epoch=3.ckpt")
    assert _temporaries(folder) == [] and load_checkpoint_file(folder / "epoch=3.ckpt")["version"] == 3


def test_disk_full_during_fit_stops_with_the_path_and_keeps_earlier_checkpoints(tmp_path, monkeypatch, patch_loaders):
    train, _ = patch_loaders
    folder = tmp_path / "ck"
    disk_full = {"now": False}

    def open_(path, mode):
        return _FullDisk(path, mode) if disk_full["now"] else io.FileIO(path, mode)

    class FillTheDisk(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            disk_full["now"] = trainer.current_epoch >= 1

    monkeypatch.setattr(checkpoint_files, "open", open_, raising=False)
    module = make_module(stage=2, ema_decay=0.9)
    trainer = make_trainer(
        tmp_path, max_epochs=3, limit_val_batches=0, enable_checkpointing=True, plugins=[SafeCheckpointIO()],
        callbacks=[FillTheDisk(), pl.callbacks.ModelCheckpoint(dirpath=folder, save_last=True, every_n_epochs=1)],
    )
    with pytest.raises(OSError) as info:
        trainer.fit(module, train)
    assert info.value.errno == errno.ENOSPC
    assert str(folder) in str(info.value) and "earlier checkpoints are intact" in str(info.value)
    last = load_checkpoint_file(folder / "last.ckpt")
    assert last["salightning"]["batches_seen"] == len(train) and last["epoch"] == 0
    assert sorted(p.name for p in folder.iterdir()) == ["epoch=0-step=8.ckpt", "last.ckpt"]  # no temporaries


# --------------------------------------------------------------------------------------------
# Untrusted, corrupt and foreign checkpoints
# --------------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this runs code: it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.fixture()
def malicious_checkpoint(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "code_ran"
    path = tmp_path / "malicious.ckpt"
    torch.save(fit_style_checkpoint(RRDBNet(**TINY_GENERATOR), callbacks={"x": _Payload(marker)}), path)
    # The payload is live: an unsafe load would run it.
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    return path, marker


def _lr_input(tmp_path: Path, photos) -> Path:
    path = tmp_path / "inputs" / "lr.png"
    save_png(photos[0][:, 150:182, 200:232], path)
    return path


LOADERS = [
    "SafeCheckpointIO", "load_generator", "load_pretrained", "cli-predict", "cli-export", "cli-evaluate", "cli-fit-ckpt_path",
    "cli-pretrained_generator",
]


def _load_with(loader: str, path: Path, tmp_path: Path, photos, capsys) -> str:
    """Load ``path`` with one of the ways a checkpoint enters salightning; the error text."""
    if loader == "SafeCheckpointIO":
        with pytest.raises(ValueError) as info:
            SafeCheckpointIO().load_checkpoint(path)
        return str(info.value)
    if loader == "load_generator":
        with pytest.raises(ValueError) as info:
            load_generator(path)
        return str(info.value)
    if loader == "load_pretrained":
        with pytest.raises(ValueError) as info:
            load_pretrained(RRDBNet(**TINY_GENERATOR), path)
        return str(info.value)
    if loader == "cli-predict":
        argv = ["predict", "--ckpt_path", path, "--input", _lr_input(tmp_path, photos), "--output", tmp_path / "out"]
    elif loader == "cli-export":
        argv = ["export", "--ckpt_path", path, "--output", tmp_path / "exported.pth"]
    elif loader == "cli-evaluate":
        argv = ["evaluate", "--ckpt_path", f"m={path}", "--test_sets", f"t={_lr_input(tmp_path, photos).parent}", "--output", tmp_path / "eval",
                "--lpips", "none", "--no_bicubic"]
    else:
        project = make_project(tmp_path / "project", photos)
        config = write_config(project / "config.yaml", tiny_config(project, max_epochs=1))
        option = "--ckpt_path" if loader == "cli-fit-ckpt_path" else "--model.pretrained_generator"
        argv = ["fit", "--config", config, option, path]
    try:
        code, _, err = run_main(argv, capsys)
    except Exception as exc:  # noqa: BLE001 - an escaping exception is a failure to report clearly
        code, err = 1, f"{type(exc).__name__}: {exc}"
    assert code != 0
    return err


@pytest.mark.parametrize("loader", LOADERS)
def test_code_in_a_checkpoint_never_runs(malicious_checkpoint, loader, tmp_path, photos, capsys):
    path, marker = malicious_checkpoint
    _load_with(loader, path, tmp_path, photos, capsys)
    assert not marker.exists()


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint written by Lightning (1 batch of a tiny GAN)."""
    tmp = tmp_path_factory.mktemp("real_ckpt")
    from conftest import PhotoPatches, load_photo

    loader = torch.utils.data.DataLoader(PhotoPatches([load_photo("astronaut")], n=2), batch_size=2)
    trainer = make_trainer(tmp, limit_train_batches=1, enable_checkpointing=True, plugins=[SafeCheckpointIO()],
                           callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp / "ck", save_last=True)])
    trainer.fit(make_module(stage=2), loader)
    return tmp / "ck" / "last.ckpt"


def _bad_checkpoint(kind: str, folder: Path, real: Path, marker: Path) -> Path:
    path = folder / f"{kind}.ckpt"
    if kind == "truncated":
        data = real.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "plain-dict":
        torch.save({"weights": torch.zeros(3), "note": "not a checkpoint"}, path)
    elif kind == "text":
        path.write_text("model: RRDBNet\nthis is a YAML file, not a checkpoint\n")
    else:  # malicious
        torch.save(fit_style_checkpoint(RRDBNet(**TINY_GENERATOR), payload=_Payload(marker)), path)
    return path


def _bad_checkpoint_cases() -> list[Any]:
    cases = []
    for kind in ("truncated", "plain-dict", "text", "malicious"):
        for loader in LOADERS:
            cases.append(pytest.param(kind, loader, id=f"{kind}-{loader}"))
    return cases


def test_unreadable_pretrained_generator_leaves_no_run_folder(malicious_checkpoint, tmp_path, photos, capsys):
    path, _ = malicious_checkpoint
    project = make_project(tmp_path / "project", photos)
    config = write_config(project / "config.yaml", tiny_config(project, max_epochs=1))
    code, _, err = run_main(["fit", "--config", config, "--model.pretrained_generator", path], capsys)
    assert code == 2 and "was refused" in err, err[-3000:]
    assert not (project / "run").exists() or not any((project / "run").iterdir()), sorted((project / "run").rglob("*"))


def test_checkpoints_saved_from_python_carry_a_checksum(tmp_path, patch_loaders, caplog):
    """trainer.save_checkpoint with Lightning's own checkpoint IO (no SafeCheckpointIO): the module adds it."""
    train, _ = patch_loaders
    trainer = make_trainer(tmp_path, limit_train_batches=1)
    trainer.fit(make_module(stage=1), train)
    trainer.save_checkpoint(tmp_path / "python.ckpt")
    raw = torch.load(tmp_path / "python.ckpt", weights_only=True)
    assert raw[checkpoint_files.CHECKSUM_KEY] == checkpoint_files.tensor_digest(raw)
    with caplog.at_level("WARNING"):
        load_generator(tmp_path / "python.ckpt")
    assert "checksum" not in caplog.text
    # A file without one (torch.save of your own) loads with a note giving the right reason.
    del raw[checkpoint_files.CHECKSUM_KEY]
    torch.save(raw, tmp_path / "foreign.ckpt")
    with caplog.at_level("WARNING"):
        load_generator(tmp_path / "foreign.ckpt")
    assert "no content checksum (not written by salightning" in caplog.text and "written before" not in caplog.text


@pytest.mark.parametrize("kind, loader", _bad_checkpoint_cases())
def test_bad_checkpoints_give_a_clear_error_naming_the_file(kind, loader, real_checkpoint, tmp_path, photos, capsys):
    marker = tmp_path / "code_ran"
    path = _bad_checkpoint(kind, tmp_path, real_checkpoint, marker)
    before = path.read_bytes()
    err = _load_with(loader, path, tmp_path, photos, capsys)
    assert str(path) in err, err
    assert "Traceback" not in err, err
    assert not marker.exists()
    assert path.read_bytes() == before
    if kind == "malicious":  # the same one-line refusal wherever the file enters
        (line,) = [line for line in err.splitlines() if "refused" in line]
        assert f"{str(path)!r} was refused: it holds Python objects other than tensors" in line and "could run code" in line, err
        assert "weights_only=False" not in err  # torch's advice to load it unsafely


# --------------------------------------------------------------------------------------------
# Faults during training
# --------------------------------------------------------------------------------------------


def _image_data(train: Path, val: Path | None = None, **kwargs: Any) -> ImageSRDataModule:
    defaults = {
        "train_hr": str(train), "val_hr": str(val or train), "scale": 4, "patch_size": 32, "batch_size": 2,
        "samples_per_epoch": 8, "num_workers": 0, "eval_patch_size": 32, "val_batch_size": 1,
    }
    defaults.update(kwargs)
    return ImageSRDataModule(**defaults)


def _with_truncated_image(tmp_path: Path, photos) -> tuple[Path, Path]:
    project = make_project(tmp_path / "project", photos)
    data = (project / "train" / "photo0.png").read_bytes()
    # The header survives (setup's size checks pass); the pixels end half-way. The name puts it
    # second in the folder: with the default seed it is first drawn in the third batch of epoch 0
    # (Lightning fetches one batch ahead, so the error comes after the first batch trained).
    bad = project / "train" / "photo0_truncated.png"
    bad.write_bytes(data[: len(data) // 2])
    return project, bad


@pytest.mark.parametrize("num_workers", [0, 1])
def test_unreadable_image_mid_epoch_names_the_file(tmp_path, photos, num_workers):
    project, _ = _with_truncated_image(tmp_path, photos)
    before = tree_digest(project)
    module = make_module(stage=2)
    trainer = make_trainer(tmp_path, max_epochs=2, limit_val_batches=0)
    with pytest.raises(ValueError, match="photo0_truncated.png") as info:
        trainer.fit(module, datamodule=_image_data(project / "train", num_workers=num_workers))
    assert "truncated" in str(info.value)
    assert module.batches_seen >= 1  # the error came mid-epoch, after training had started
    assert tree_digest(project) == before


def test_skip_unreadable_warns_with_the_file_and_trains(tmp_path, photos):
    project, bad = _with_truncated_image(tmp_path, photos)
    module = make_module(stage=2)
    trainer = make_trainer(tmp_path, max_epochs=2, limit_val_batches=0)
    with pytest.warns(UserWarning, match=r"skip_unreadable.*photo0_truncated\.png"):
        trainer.fit(module, datamodule=_image_data(project / "train", skip_unreadable=True))
    assert module.batches_seen == 2 * 4 and module.nonfinite_guard.total == 0
    assert bad.exists()  # skipped, never touched


def _panels_on_a_full_disk(tmp_path: Path, photos, monkeypatch) -> tuple[OSError, Path]:
    """Train 3 epochs with ValidationPanels; the disk fills up during epoch 1. The error, the checkpoint folder."""
    from salightning.callbacks import ValidationPanels

    project = make_project(tmp_path / "project", photos)
    folder = tmp_path / "ck"
    real_save = Image.Image.save
    disk_full = {"now": False}

    def save(self, fp, *args, **kwargs):
        if disk_full["now"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a failing write(2) reports it
        return real_save(self, fp, *args, **kwargs)

    class FillTheDisk(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            disk_full["now"] = trainer.current_epoch >= 1

    monkeypatch.setattr(Image.Image, "save", save)
    trainer = make_trainer(
        tmp_path, max_epochs=3, limit_val_batches=1, enable_checkpointing=True, plugins=[SafeCheckpointIO()],
        callbacks=[FillTheDisk(), ValidationPanels(num_images=1), pl.callbacks.ModelCheckpoint(dirpath=folder, save_last=True)],
    )
    with pytest.raises(OSError) as info:
        trainer.fit(make_module(stage=2), datamodule=_image_data(project / "train", project / "val"))
    return info.value, folder


def test_disk_full_while_writing_validation_panels_stops_and_keeps_checkpoints(tmp_path, photos, monkeypatch):
    error, folder = _panels_on_a_full_disk(tmp_path, photos, monkeypatch)
    assert error.errno == errno.ENOSPC
    assert (tmp_path / "samples" / "epoch000_batch0000004.png").is_file()  # epoch 0's panel, written before
    last = load_checkpoint_file(folder / "last.ckpt")  # epoch 0's, intact
    assert last["epoch"] == 0 and last["salightning"]["batches_seen"] == 4


def test_disk_full_while_writing_validation_panels_names_the_file(tmp_path, photos, monkeypatch):
    error, _ = _panels_on_a_full_disk(tmp_path, photos, monkeypatch)
    assert "epoch001" in str(error) and ".png" in str(error), str(error)


@pytest.mark.parametrize("network", ["generator", "discriminator"])
def test_nonfinite_gradient_with_a_finite_loss_is_skipped(tmp_path, patch_loaders, network):
    train, _ = patch_loaders
    module = make_module(stage=2)
    param = next(p for p in getattr(module, network).parameters() if p.ndim > 1)
    poison = {"on": False, "done": 0}

    def poison_hook(grad: torch.Tensor) -> torch.Tensor:
        if not poison["on"]:
            return grad
        poison["done"] += 1
        return grad * float("nan")

    param.register_hook(poison_hook)
    losses = []

    class PoisonSecondBatch(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            poison["on"] = batch_idx == 1

        def on_train_batch_end(self, trainer, pl_module, *args):
            losses.append(float(trainer.callback_metrics["train/loss"]))

    make_trainer(tmp_path, max_epochs=1, limit_val_batches=0, callbacks=[PoisonSecondBatch()]).fit(module, train)
    assert poison["done"] >= 1 and all(math.isfinite(x) for x in losses)  # every loss was finite
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert module.nonfinite_guard.total == 1 and module.batches_seen == len(train)


def test_a_run_whose_weights_explode_stops_naming_divergence_and_keeps_no_best(tmp_path, photos, capsys):
    """``lr 1e30``: the first step makes the weights huge but finite, every later step is skipped
    as non-finite (never 20 in a row in 12 batches), and the validation loss is inf."""
    project = make_project(tmp_path / "project", photos)
    config = tiny_config(project, max_epochs=3)
    config["trainer"]["callbacks"] = _shipped_callbacks(project)
    code, _, err = run_main(["fit", "--config", write_config(project / "config.yaml", config), "--model.optimizer_g.init_args.lr", "1e30"], capsys)
    assert code == 2 and "Traceback" not in err, err[-3000:]
    (line,) = [line for line in err.splitlines() if "error:" in line]
    assert "diverged" in line and "validation loss is" in line, line
    assert not list((project / "run" / "checkpoints").glob("best-*.ckpt"))


def test_a_validation_after_only_skipped_batches_is_divergence():
    from salightning.training import NonFiniteGuard

    guard = NonFiniteGuard(max_in_a_row=20)
    guard.passed()
    guard.skipped("loss", batch=1)
    guard.validated(torch.tensor(0.5), batch=2)  # one batch of the two trained: not diverged
    for batch in range(2, 6):
        guard.skipped("loss", batch=batch)
    with pytest.raises(TrainingDiverged, match="every one of the 4 training batches since the previous validation was skipped"):
        guard.validated(torch.tensor(0.5), batch=6)
    with pytest.raises(TrainingDiverged, match="validation loss is inf"):
        guard.validated(torch.tensor(float("inf")), batch=6)


def test_a_run_without_validation_whose_last_batches_were_all_skipped_ends_naming_divergence(tmp_path, patch_loaders):
    train, _ = patch_loaders

    class PoisonFromEpoch1(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch >= 1:
                batch["hr"][:] = float("nan")

    module = make_module(stage=2, max_nonfinite_in_a_row=100)
    trainer = make_trainer(tmp_path, max_epochs=2, limit_val_batches=0, callbacks=[PoisonFromEpoch1()])
    batches = [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in b.items()} for b in train]
    with pytest.raises(TrainingDiverged, match=f"the last {len(train)} training batches were all skipped"):
        trainer.fit(module, torch.utils.data.DataLoader(batches, batch_size=None))


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="a DataLoader worker killed by a signal gives PyTorch's 'worker exited unexpectedly' error, "
    "which cannot name the file being decoded",
)
def test_data_loader_worker_crash_names_the_file(tmp_path, photos, monkeypatch):
    from salightning.data import image

    project = make_project(tmp_path / "project", photos)
    real_decode = image.decode_image

    def crashing_decode(path):
        if Path(path).name == "photo2.png":
            os.kill(os.getpid(), signal.SIGKILL)  # a decoder that segfaults / the OOM killer
        return real_decode(path)

    monkeypatch.setattr(image, "decode_image", crashing_decode)
    module = make_module(stage=2)
    with pytest.raises(Exception, match="photo2.png"):
        make_trainer(tmp_path, max_epochs=1, limit_val_batches=0).fit(module, datamodule=_image_data(project / "train", num_workers=1))


# --------------------------------------------------------------------------------------------
# W&B run id
# --------------------------------------------------------------------------------------------


def test_wandb_logger_resumes_a_run_given_its_id(tmp_path):
    from salightning.loggers import WandbLogger

    logger = WandbLogger(id="run123", save_dir=str(tmp_path))
    assert logger._wandb_init["id"] == "run123" and logger._wandb_init["resume"] == "allow"
    assert logger.version == "run123"


def test_checkpoint_records_the_wandb_run_id(tmp_path, patch_loaders):
    import wandb

    from salightning.loggers import WandbLogger

    train, _ = patch_loaders
    logger = WandbLogger(id="run456", save_dir=str(tmp_path))
    trainer = make_trainer(
        tmp_path, limit_train_batches=1, logger=logger, enable_checkpointing=True,
        callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True), WandbRunId()],
    )
    try:
        trainer.fit(make_module(stage=1), train)
    finally:
        wandb.finish()
    checkpoint = load_checkpoint_file(tmp_path / "ck" / "last.ckpt")
    assert "run456" in repr({k: v for k, v in checkpoint.items() if k != "state_dict"})


def test_the_hand_built_checkpoints_of_the_tests_are_laid_out_like_a_real_one(tmp_path, photos, capsys, monkeypatch):
    """The tests' quick checkpoints (conftest.make_checkpoint / fit_style_checkpoint) stand in for
    real ones; this real `salightning fit` checkpoint keeps them honest: every key they use is
    where a real checkpoint has it, with the same kind of value."""
    from conftest import make_checkpoint, make_project, run_main, tiny_config, write_config

    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = make_project(tmp_path / "user", photos)
    config = tiny_config(root, max_epochs=1)
    code, _, err = run_main(["fit", "--config", write_config(root / "cfg.yaml", config)], capsys)
    assert code == 0, err[-3000:]
    real = load_checkpoint_file(root / "run" / "checkpoints" / "last.ckpt")
    fake = torch.load(
        make_checkpoint(tmp_path / "fake.ckpt", RRDBNet(**TINY_GENERATOR), "salightning.models.RRDBNet", dict(TINY_GENERATOR)),
        weights_only=True,
    )
    for key in ("epoch", "global_step", "pytorch-lightning_version", "state_dict", "generator_config", "hyper_parameters"):
        assert key in real and isinstance(real[key], dict) == isinstance(fake[key], dict), key
    assert real["generator_config"] == real["hyper_parameters"]["generator"]
    assert real["generator_config"]["class_path"] == fake["generator_config"]["class_path"]
    # the real one records every constructor argument, the fake the ones it was given
    assert fake["generator_config"]["init_args"].items() <= real["generator_config"]["init_args"].items()
    for prefix in ("generator.", "generator_ema.module."):
        real_keys = {k for k in real["state_dict"] if k.startswith(prefix)}
        fake_keys = {k for k in fake["state_dict"] if k.startswith(prefix)}
        assert real_keys == fake_keys, prefix
    assert "generator_ema.n_averaged" in real["state_dict"]
