"""Output paths that can never overwrite an input."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path


def resolve_path(path: str | os.PathLike, option: str) -> Path:
    """``path`` made absolute, with ``~``, ``..`` and symlinks resolved (also for parts that do
    not exist yet). A symlink loop is a ``ValueError`` naming ``option``."""
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as err:  # RuntimeError: a symlink loop before Python 3.13
        raise ValueError(f"{option} {str(path)!r} cannot be resolved ({err}); is it a symlink loop?") from None


def check_output_not_inside(inputs: Iterable[str | os.PathLike], output: str | os.PathLike, option: str) -> Path:
    """Raise a ``ValueError`` when ``output`` is on or inside one of ``inputs``.

    Both sides are resolved first (the cwd, ``..`` and symlinks), so ``--input .. --output .``
    and a symlink to an input folder are caught. Returns the resolved output.
    """
    out = resolve_path(output, option)
    for given in inputs:
        src = resolve_path(given, "input")
        if out == src or src in out.parents:
            raise ValueError(
                f"{option} {str(output)!r} ({out}) is on or inside the input {str(given)!r} ({src}); "
                "choose a folder outside the inputs (inputs are never overwritten)"
            )
    return out


def check_not_existing(paths: Iterable[Path], option: str, alternatives: str) -> None:
    """Raise a ``FileExistsError`` naming the first of ``paths`` that exists (a dangling symlink
    too) and how many more do, telling to pass ``--overwrite`` or ``alternatives`` (e.g.
    "choose another --output"), so that no output replaces an existing file unasked."""
    existing = [p for p in paths if p.exists() or p.is_symlink()]
    if existing:
        which = f"{existing[0]} and {len(existing) - 1} more output(s) exist" if len(existing) > 1 else f"{existing[0]} exists"
        raise FileExistsError(f"{option}: {which}; pass --overwrite to replace them, or {alternatives}")


def write_error(err: OSError, path: str | os.PathLike) -> OSError:
    """An ``OSError`` with ``err``'s errno and one message naming the file that could not be
    written (for a full or read-only disk), to raise ``from err`` once partial output is removed."""
    code = err.errno if err.errno is not None else errno.EIO
    reason = err.strerror or str(err)
    return OSError(code, f"could not write {path} ({reason}, errno {errno.errorcode.get(code, code)}); nothing partial was left")


def remove_outputs(files: Iterable[Path], folders: Iterable[Path]) -> None:
    """Delete ``files`` (those already written) and then ``folders`` that are left empty, deepest first."""
    for file in files:
        file.unlink(missing_ok=True)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
