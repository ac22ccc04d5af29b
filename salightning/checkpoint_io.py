"""Checkpoint files that survive kills, full disks and untrusted sources."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

log = logging.getLogger(__name__)

#: Top-level checkpoint key holding the SHA-256 of its tensors (see :func:`tensor_digest`).
CHECKSUM_KEY = "salightning_sha256"


class NonFiniteCheckpointError(RuntimeError):
    """A checkpoint was not written because a weight or optimiser state is NaN or infinite."""


def iter_tensors(obj: Any, key: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """``(key path, tensor)`` for every tensor nested in dicts, lists and tuples of ``obj``, in a
    fixed order (dict keys sorted by their text)."""
    if isinstance(obj, torch.Tensor):
        yield key, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from iter_tensors(obj[k], f"{key}.{k}" if key else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from iter_tensors(item, f"{key}[{i}]")


def tensor_digest(obj: Any) -> str:
    """SHA-256 over the key path, dtype, shape and bytes of every tensor in ``obj``
    (:data:`CHECKSUM_KEY` itself left out)."""
    sha = hashlib.sha256()
    content = {k: v for k, v in obj.items() if k != CHECKSUM_KEY} if isinstance(obj, dict) else obj
    for key, tensor in iter_tensors(content):
        t = tensor.detach().cpu().contiguous()
        sha.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        sha.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def with_checksum(obj: dict[str, Any]) -> dict[str, Any]:
    """A shallow copy of ``obj`` with :data:`CHECKSUM_KEY` set to its :func:`tensor_digest`."""
    return {**obj, CHECKSUM_KEY: tensor_digest(obj)}


def verify_checksum(obj: Any, path: str | os.PathLike, kind: str = "checkpoint") -> None:
    """Raise a ``ValueError`` naming ``path`` when ``obj`` carries a checksum its tensors do not
    match; note (log) a file without one, which loads unverified. The checksum is a key of a
    checkpoint, or an attribute of an exported state dict (kept by ``torch.save``/``torch.load``)."""
    stored = (obj.get(CHECKSUM_KEY) if isinstance(obj, dict) else None) or getattr(obj, CHECKSUM_KEY, None)
    if stored is None:
        log.warning("note: %s %s has no content checksum (written before salightning checked them); loaded unverified", kind, path)
    elif stored != tensor_digest(obj):
        raise ValueError(
            f"{kind} {str(path)!r} is corrupt: its tensors do not match the SHA-256 stored in it "
            "(damaged on disk or in transfer); use another copy"
        )


def check_finite_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Raise :class:`NonFiniteCheckpointError` naming ``path`` and the first floating tensor of
    the weights (``state_dict``) or optimiser states that holds a NaN or an infinity."""
    content = {k: checkpoint[k] for k in ("state_dict", "optimizer_states") if k in checkpoint}
    for key, tensor in iter_tensors(content):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise NonFiniteCheckpointError(
                f"checkpoint {path} was not written: {key} holds NaN or infinite values (the run diverged; "
                "lower the learning rate or check the settings); earlier checkpoints are intact"
            )


class _WriteErrorRecorder:
    """A file wrapper that remembers the ``OSError`` of a failed write.

    ``torch.save`` writes through its C++ zip writer, which turns a failing ``write`` (a full
    disk) into ``RuntimeError: ... unexpected pos ...`` and drops the errno."""

    def __init__(self, file: Any) -> None:
        self._file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._file.write(data)
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable (a power cut after os.replace keeps the new name).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: Path) -> None:
    """Delete ``.partial-write.<pid>.tmp`` files in ``folder`` whose writer no longer runs (killed mid-write)."""
    for leftover in folder.glob(".*.tmp"):
        pid = leftover.name[: -len(".tmp")].rpartition(".")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            leftover.unlink(missing_ok=True)


def partial_path(target: Path) -> Path:
    """The temporary file a write of ``target`` by this process goes through. No "ckpt" in the
    name: Lightning's HPC resume parses version numbers out of any file name containing
    "hpc_ckpt_", and --ckpt_path last globs for *.ckpt."""
    return target.with_name(f".partial-write.{os.getpid()}.tmp")


def save_atomically(obj: Any, target: Path, kind: str = "checkpoint", unchanged: str = "earlier checkpoints are intact") -> None:
    """``torch.save(obj, target)`` through a temporary file in the same folder, ``fsync``ed and
    renamed over ``target``: a kill leaves the previous file or the new one. A failed write
    removes the temporary file and raises an ``OSError`` with the failure's errno, naming
    ``target`` (``kind``) and saying what is ``unchanged``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(target)
    recorder: _WriteErrorRecorder | None = None
    try:
        with open(tmp, "wb") as f:
            recorder = _WriteErrorRecorder(f)
            torch.save(obj, recorder)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        cause = err if isinstance(err, OSError) else (recorder.error if recorder is not None else None)
        if cause is None:
            raise  # not an I/O failure (e.g. an unpicklable object, KeyboardInterrupt)
        code = cause.errno if cause.errno is not None else errno.EIO
        reason = cause.strerror or str(cause)
        raise OSError(code, f"could not write {kind} {target} ({reason}, errno {errno.errorcode.get(code, code)}); {unchanged}") from err
    _fsync_dir(target.parent)
    remove_stale_temporaries(target.parent)


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


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = None) -> dict[str, Any]:
    """Read a Lightning checkpoint without executing code from it.

    Args:
        path: a local ``.ckpt`` file.
        map_location: as for ``torch.load`` (default: CPU).

    Returns:
        the checkpoint dict (it has a ``"state_dict"``).

    Raises:
        FileNotFoundError: naming the file, when it does not exist.
        ValueError: naming the file, when it holds Python objects that loading would execute
            (refused), is corrupt or truncated, or is not a Lightning checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {str(p)!r} does not exist")
    try:
        checkpoint = torch.load(p, map_location=map_location or "cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only load failed" in str(err).lower():
            # torch's message is long; its line naming the refused global is the useful one
            culprit = next((line.strip() for line in str(err).splitlines() if "GLOBAL" in line), "")
            raise ValueError(
                f"checkpoint {str(p)!r} was refused: it holds Python objects other than tensors and plain "
                "containers, and loading them could run code from the file (salightning reads "
                f"checkpoints with weights_only=True only). {culprit}"
            ) from err
        raise ValueError(f"checkpoint {str(p)!r} is corrupt, truncated or not a checkpoint ({type(err).__name__}: {err})") from err
    except Exception as err:
        raise ValueError(f"checkpoint {str(p)!r} is corrupt, truncated or not a checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"checkpoint {str(p)!r} is not a Lightning checkpoint (no 'state_dict')")
    verify_checksum(checkpoint, p)
    return checkpoint
