"""Lightning's checkpoint IO with salightning's guarantees (the files: :mod:`salightning.checkpoints`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from salightning.checkpoints import check_finite_checkpoint, load_checkpoint_file, partial_path, save_atomically, with_checksum


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO with five guarantees for local files.

    * **Atomic writes**: the checkpoint is written to a temporary file in the same folder
      (``.partial-write.<pid>.tmp``: never matched by ``--ckpt_path last`` or HPC resume), flushed to disk (``fsync``)
      and renamed over the target, so a kill at any moment leaves either the previous file or
      the new one, never a truncated ``last.ckpt``. Temporary files left by killed writers are
      removed by the next successful checkpoint write in the same folder.
    * **Clear disk errors**: a failed write (disk full, permissions) removes the temporary file
      and raises an ``OSError`` naming the checkpoint, with the errno of the failure (``ENOSPC``
      for a full disk); files written earlier are untouched.
    * **Finite weights only**: a checkpoint whose weights or optimiser states hold NaN or
      infinity is not written (:class:`NonFiniteCheckpointError`); earlier files stay as they were.
    * **Checksums**: every file carries the SHA-256 of its tensors (:data:`CHECKSUM_KEY`),
      verified by :func:`load_checkpoint_file`; a mismatch is a ``ValueError`` naming the file.
    * **No code execution on load**: files are read with ``torch.load(weights_only=True)``;
      a file that holds other Python objects is refused, and a corrupt or foreign file raises a
      ``ValueError`` naming it.

    Remote paths (``s3://`` etc.) fall back to Lightning's own implementation.
    """

    in_flight: Path | None = None  #: the temporary file of a write in progress

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        check_finite_checkpoint(checkpoint, target)
        self.in_flight = partial_path(target)  # a signal handler that must exit now deletes it
        try:
            save_atomically(with_checksum(checkpoint), target)
        finally:
            self.in_flight = None

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        return load_checkpoint_file(path, map_location=map_location)
