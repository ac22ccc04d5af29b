"""A decoded-image cache for on-the-fly training: each HR image is decoded once into an
uncompressed ``.npy`` file, memory-mapped afterwards, so a random crop reads only its region.

Cache files live under ``$SALIGHTNING_CACHE_DIR/decoded`` (default ``~/.cache/salightning/decoded``),
never in the data folder, and are keyed by the source's resolved path, size and modification time:
a changed source gets a new entry. Entries are written to a temporary name and renamed, so
DataLoader workers decoding the same image at once never see a partial file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from salightning.data.samples import default_cache_dir


class DecodeCache:
    """Decode image files once and return them memory-mapped.

    Args:
        decode: the decoder of the uncached path (file -> uint8/uint16 ``(H, W[, 3])`` array).
        root: the cache folder (default ``default_cache_dir() / "decoded"``).

    Raises:
        ValueError: when ``root`` lies inside the folder of an image it is asked to cache.
    """

    def __init__(self, decode: Callable[[Path], np.ndarray], root: str | os.PathLike | None = None) -> None:
        self.decode = decode
        self.root = Path(root).expanduser() if root is not None else default_cache_dir() / "decoded"

    def entry(self, source: str | os.PathLike) -> Path:
        """The cache file of ``source`` (whether or not it exists yet)."""
        path = Path(source).resolve()
        stat = path.stat()
        key = hashlib.sha256(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:40]
        return self.root / key[:2] / f"{key}.npy"

    def __call__(self, source: str | os.PathLike) -> np.ndarray:
        """``decode(source)``, read-only and memory-mapped from the cache (decoded on first use)."""
        source = Path(source)
        cached = self.entry(source)
        if not cached.is_file():
            root = self.root.resolve()
            if root == source.resolve().parent or source.resolve().parent in root.parents:
                raise ValueError(f"decode cache folder {str(self.root)!r} lies inside the data folder of {source}; choose another SALIGHTNING_CACHE_DIR")
            array = self.decode(source)
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(f"{cached.stem}.{os.getpid()}.tmp.npy")
            np.save(tmp, np.ascontiguousarray(array))
            os.replace(tmp, cached)
        return np.load(cached, mmap_mode="r")
