"""Experiment tracking: Lightning's ``WandbLogger`` with defaults that never hang or fail, and a
``CSVLogger`` that keeps one ``metrics.csv`` per run across resumes.

    trainer:
      logger:
        class_path: salightning.loggers.WandbLogger
        init_args: {name: sa_esrgan_lv}   # project: $WANDB_PROJECT or salightning; files in the run folder

Online when W&B credentials are found (checkpoints are then uploaded as artifacts), offline
otherwise (everything is written under ``<save_dir>/wandb`` and uploaded later with
``wandb sync``), disabled with ``WANDB_MODE=disabled`` (what the tests use).
"""

from __future__ import annotations

import csv
import netrc
import os
import sys
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger as _LightningCSVLogger
from pytorch_lightning.loggers import WandbLogger as _LightningWandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities import rank_zero_only

__all__ = ["CSVLogger", "WandbLogger", "wandb_env_mode", "has_wandb_credentials"]

_DEFAULT_HOST = "api.wandb.ai"


def wandb_env_mode() -> str | None:
    """``WANDB_MODE`` normalised: "offline" (also for W&B's old "dryrun"), "disabled", "online",
    or None when unset."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if not mode:
        return None
    return "offline" if mode == "dryrun" else mode


def _netrc_path() -> Path:
    # The same lookup as the wandb client: $NETRC, else ~/.netrc, else ~/_netrc (Windows).
    if os.environ.get("NETRC"):
        return Path(os.environ["NETRC"]).expanduser()
    unix = Path("~/.netrc").expanduser()
    windows = Path("~/_netrc").expanduser()
    return windows if not unix.exists() and windows.exists() else unix


def has_wandb_credentials() -> bool:
    """True when the wandb client would find credentials without asking: ``WANDB_API_KEY``,
    ``WANDB_IDENTITY_TOKEN_FILE``, or a netrc entry (what ``wandb login`` writes) for the W&B
    host (``WANDB_BASE_URL``, default api.wandb.ai). Reads files only, never the network."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    base_url = os.environ.get("WANDB_BASE_URL", "")
    host = urlsplit(base_url).netloc or _DEFAULT_HOST
    try:
        entry = netrc.netrc(_netrc_path()).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


class WandbLogger(_LightningWandbLogger):
    """Weights & Biases logger that decides by itself whether it can go online.

    Args:
        project: W&B project.
        name: display name of the run (W&B makes one up when None).
        save_dir: folder for W&B's local files (``<save_dir>/wandb``); under LightningCLI also
            the resolved ``config.yaml``, and the checkpoints unless ``ModelCheckpoint`` names a
            ``dirpath``.
        group: W&B run group (e.g. the experiment, with one run per seed).
        tags: W&B tags.
        entity: W&B user or team (default: the account of the credentials).
        id: id of an existing run, to resume it (``--ckpt_path`` resumes the training itself).
        offline: None decides: offline when ``WANDB_MODE`` is offline/dryrun/disabled or no
            credentials are found (see :func:`has_wandb_credentials`), online otherwise. An
            offline or disabled ``WANDB_MODE`` always wins, since it says what the machine can do.
        log_model: upload checkpoints as artifacts (True: at the end, "all": as they are
            written). None: True online, False offline. Dropped, with a notice, when the run
            is offline for lack of credentials or because of ``WANDB_MODE``.
        prefix: prefix of every metric key.
        checkpoint_name: name of the checkpoint artifacts (default ``model-<run id>``).

    Raises:
        ValueError: ``offline=True`` together with ``log_model`` set (nothing can be uploaded).
    """

    def __init__(
        self,
        project: str | None = None,
        name: str | None = None,
        save_dir: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        entity: str | None = None,
        id: str | None = None,
        offline: bool | None = None,
        log_model: bool | Literal["all"] | None = None,
        prefix: str = "",
        checkpoint_name: str | None = None,
    ) -> None:
        if offline is True and log_model:
            raise ValueError(
                f"log_model={log_model!r} needs an online run but offline=True: checkpoints cannot be "
                "uploaded offline; drop one of them"
            )
        env_mode = wandb_env_mode()
        self.disabled = env_mode == "disabled"
        if self.disabled or env_mode == "offline":
            self.offline, reason = True, f"WANDB_MODE={os.environ['WANDB_MODE']}"
        elif offline is None:
            self.offline = not has_wandb_credentials()
            reason = "no W&B credentials found: set WANDB_API_KEY or run `wandb login`"
        else:
            self.offline, reason = offline, "offline=True"
        dropped = bool(log_model) and self.offline
        if log_model is None or dropped:
            log_model = not self.offline
        extra = {k: v for k, v in (("group", group), ("tags", tags), ("entity", entity)) if v is not None}
        # The mode goes to wandb.init: Lightning's own `offline=True` would rewrite
        # os.environ["WANDB_MODE"] for the whole process (turning "disabled" into "dryrun").
        if self.offline:
            extra["mode"] = "disabled" if self.disabled else "offline"
        # W&B's own variables apply unless the config sets a value (wandb reads WANDB_ENTITY itself).
        project = project or os.environ.get("WANDB_PROJECT") or "salightning"
        save_dir = save_dir or os.environ.get("WANDB_DIR") or "."
        super().__init__(
            name=name,
            save_dir=save_dir,
            id=id,
            project=project,
            log_model=log_model,
            offline=False,
            prefix=prefix,
            checkpoint_name=checkpoint_name,
            **extra,
        )
        if self._wandb_init.get("anonymous") is None:
            del self._wandb_init["anonymous"]  # wandb warns about the key even when it is None
        self._announce(reason, dropped)

    def resume_run(self, run_id: str) -> bool:
        """Continue the W&B run ``run_id`` (from a checkpoint) unless the user named a run or the
        run has already started; returns whether it will."""
        if self._id is not None or self._experiment is not None:
            return False
        self._id = run_id
        self._wandb_init.update(id=run_id, resume="allow")
        return True

    @rank_zero_only
    def _announce(self, reason: str, dropped_log_model: bool) -> None:
        if self.disabled:
            message = f"W&B logging is disabled ({reason})"
        elif self.offline:
            runs = Path(self.save_dir or ".").resolve() / "wandb" / "offline-run-*"
            message = f"W&B runs offline ({reason}); upload it later with: wandb sync {runs}"
        else:
            return
        if dropped_log_model:
            message += "; checkpoints stay local (log_model needs an online run)"
        print(f"salightning: {message}", file=sys.stderr, flush=True)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but a ``metrics.csv`` already there is continued, not deleted.

    Its columns are kept; its rows from the step the resumed run starts logging at on are
    dropped at the first save: a killed run logged them after its last checkpoint, and the
    resumed run logs those steps again."""

    def __init__(self, log_dir: str) -> None:
        self._resuming = False
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            self.metrics_keys = sorted(csv.DictReader(file).fieldnames or [])
        self._resuming = bool(self.metrics_keys)

    def save(self) -> None:
        if self._resuming and self.metrics:
            self._resuming = False
            first = min(int(row["step"]) for row in self.metrics)
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                kept = [row for row in csv.DictReader(file) if row.get("step") and int(float(row["step"])) < first]
            with self._fs.open(self.metrics_file_path, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(kept)
        super().save()


class CSVLogger(_LightningCSVLogger):
    """Lightning's ``CSVLogger`` writing ``<save_dir>/<name>/metrics.csv`` (no ``version_N``
    folders): a resumed run continues its run's file, so a run has one ``metrics.csv``
    whatever its interruptions (see :class:`_AppendingWriter` for the rows a resume replaces).
    ``salightning fit`` adds one (``<run>/logs/metrics.csv``) unless the config has a CSVLogger.

    Args:
        save_dir: the run folder.
        name: sub-folder of the metrics file (also of ``hparams.yaml`` and the run's ``config.yaml``).
        flush_logs_every_n_steps: write the file every this many logged steps.
    """

    def __init__(self, save_dir: str, name: str = "logs", flush_logs_every_n_steps: int = 100) -> None:
        super().__init__(save_dir, name=name, version="", flush_logs_every_n_steps=flush_logs_every_n_steps)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
