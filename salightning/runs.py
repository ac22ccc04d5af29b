"""Run folders: one folder per run under the experiment's ``trainer.default_root_dir``.

    runs/sa_esrgan_lv/            <- trainer.default_root_dir (the experiment)
        version_0/                <- one run: everything it writes
            checkpoints/  samples/  logs/metrics.csv  logs/config.yaml  curves.png  wandb/  .lock
        version_1/                <- a rerun never writes into version_0

``--ckpt_path last`` resumes the newest run that has a ``last*.ckpt`` and keeps writing into that
run's folder (a run that failed before its first checkpoint or metrics row leaves no folder:
:func:`remove_unused_run`); a checkpoint path inside ``<root>/<run>/checkpoints`` resumes that run. Under a
cluster launcher (a SLURM batch job, torchrun) every rank starts at once, so the run is
named after the job (``slurm-<job id>``, ``torchrun-<run id>``): all ranks agree and a requeued
job continues its own folder. Processes started by Lightning's launcher inherit the folder
through ``SALIGHTNING_RUN_DIR`` (a user may set it too).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

__all__ = ["RUN_DIR_ENV", "RunFolderInUseError", "RunLock", "choose_run_dir", "is_global_rank_zero", "remove_unused_run", "run_has_results"]

#: Environment variable naming the run folder (set for child processes, or by a user).
RUN_DIR_ENV = "SALIGHTNING_RUN_DIR"

_VERSION = re.compile(r"^version_(\d+)$")


class RunFolderInUseError(FileExistsError):
    """Another live process holds the run folder's lock."""


def is_global_rank_zero() -> bool:
    """True in the process that is (or will be) global rank 0, from the launchers' variables."""
    for var in ("RANK", "SLURM_PROCID", "PMI_RANK", "OMPI_COMM_WORLD_RANK"):
        if os.environ.get(var, "0") != "0":
            return False
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def _job_run_name() -> str | None:
    """A run name every rank of a cluster job derives alike, or None outside such a job."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    if SLURMEnvironment.detect():  # a batch job (not an interactive allocation): requeues keep the id
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    if os.environ.get("TORCHELASTIC_RUN_ID") and os.environ.get("TORCHELASTIC_RUN_ID") != "none":
        return f"torchrun-{os.environ['TORCHELASTIC_RUN_ID']}"
    return None


def _run_of_checkpoint(root: Path, ckpt: Path) -> Path | None:
    """The run folder ``<root>/<run>`` a checkpoint at ``<root>/<run>/checkpoints/x.ckpt`` belongs to."""
    run = ckpt.resolve().parent.parent
    return run if ckpt.resolve().parent.name == "checkpoints" and run.parent == root.resolve() else None


def newest_resumable_run(root: Path) -> Path | None:
    """The run folder under ``root`` whose newest ``checkpoints/last*.ckpt`` is the newest of all."""
    candidates = [p for p in root.glob("*/checkpoints/last*.ckpt") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime).parent.parent if candidates else None


def choose_run_dir(root: str | os.PathLike, ckpt_path: str | None = None) -> Path:
    """The folder this run writes to (not created here).

    Args:
        root: the experiment folder (``trainer.default_root_dir``).
        ckpt_path: ``--ckpt_path`` of the command: ``"last"`` or a file resumes its run.

    Returns:
        ``$SALIGHTNING_RUN_DIR`` when set; the resumed run's folder; the job's folder under a
        cluster launcher; else the next free ``<root>/version_<N>``.
    """
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    root = Path(root)
    if ckpt_path == "last":
        if (run := newest_resumable_run(root)) is not None:
            return run
    elif ckpt_path and ckpt_path not in ("hpc", "best", "registry"):
        if (run := _run_of_checkpoint(root, Path(ckpt_path))) is not None:
            return run
    if (name := _job_run_name()) is not None:
        return root / name
    versions = [int(m.group(1)) for p in (root.iterdir() if root.is_dir() else []) if (m := _VERSION.match(p.name))]
    return root / f"version_{max(versions, default=-1) + 1}"


def run_has_results(run_dir: str | os.PathLike) -> bool:
    """Whether a run folder holds what a run is kept for: a checkpoint or a row of metrics
    (not only what setup writes: the lock, config.yaml, hparams.yaml, sanity-check panels)."""
    run = Path(run_dir)
    if any(p.is_file() for p in run.rglob("*.ckpt")):
        return True
    return any(len(p.read_text(errors="replace").splitlines()) > 1 for p in run.rglob("metrics.csv") if p.is_file())


def remove_unused_run(created: Sequence[Path]) -> None:
    """After a failed command: delete the run folder ``created[0]`` unless it has results
    (:func:`run_has_results`), then the folders above it in ``created`` that are left empty.

    Args:
        created: the run folder and its parents that the command made, deepest first (empty: nothing to do).
    """
    if not created or not created[0].is_dir() or run_has_results(created[0]):
        return
    shutil.rmtree(created[0], ignore_errors=True)
    for folder in created[1:]:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


class RunLock:
    """An exclusive lock on a run folder for this process's lifetime (``<run>/.lock``).

    The operating system releases it when the process ends, even by ``kill -9``, so a killed run
    can be resumed at once; a second live run in the same folder is refused.

    Args:
        run_dir: the run folder (created).

    Raises:
        RunFolderInUseError: another live process holds the lock; the message names it.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        import fcntl

        self.path = Path(run_dir) / ".lock"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise RunFolderInUseError(
                f"run folder {self.path.parent} is in use by {holder}; wait for that run to end, or "
                "give this one another folder with --trainer.default_root_dir"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        self._file.flush()

    def release(self) -> None:
        """Release the lock (also done when the process ends)."""
        if not self._file.closed:
            self._file.close()
