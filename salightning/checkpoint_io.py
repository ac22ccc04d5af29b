"""Checkpoint files that survive kills, full disks and untrusted sources."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO with three guarantees for local files.

    * **Atomic writes**: the checkpoint is written to a temporary file in the same folder,
      flushed to disk (``fsync``) and renamed over the target, so a kill at any moment leaves
      either the previous file or the new one, never a truncated ``last.ckpt``.
    * **Clear disk errors**: a failed write (disk full, permissions) removes the temporary file
      and raises an ``OSError`` naming the checkpoint; files written earlier are untouched.
    * **No code execution on load**: files are read with ``torch.load(weights_only=True)``;
      a corrupt or foreign file raises a ``ValueError`` naming it.

    Remote paths (``s3://`` etc.) fall back to Lightning's own implementation.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise OSError(
                err.errno, f"could not write checkpoint {target} ({err.strerror or err}); earlier checkpoints are intact"
            ) from err

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint {str(p)!r} does not exist")
        try:
            checkpoint = torch.load(p, map_location=map_location or "cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"checkpoint {str(p)!r} is corrupt, truncated or not a plain Lightning checkpoint: {err}") from err
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise ValueError(f"checkpoint {str(p)!r} is not a Lightning checkpoint (no 'state_dict')")
        return checkpoint
