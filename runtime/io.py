"""Files written whole or not at all, and arrays read with clear errors."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile

from ..lrp_graph.errors import InputError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, suffix: str | None = None, *, make_parents: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    ``suffix`` (default: ``path``'s own) keeps writers that infer the format from the
    name (numpy, matplotlib, soundfile) working. ``make_parents`` creates missing folders
    (caches, checkpoints); otherwise a missing output folder is an error (user outputs).
    """
    path = Path(path)
    if make_parents and not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent and not path.parent.exists():
        raise InputError(f"{path}: output folder '{path.parent}' does not exist")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give the output a file name")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix,
                               dir=path.parent or ".")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_write(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """Load an array from ``.npy`` (or the first array of an ``.npz``) with one-line errors."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0][:200]})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        keys = list(data.keys())
        if not keys:
            raise InputError(f"{path}: empty .npz archive")
        return data["x"] if "x" in keys else data[keys[0]]
    return data


def write_wav(path: str | os.PathLike, wave: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> Path:
    """Write a mono (1-D) or multi-channel (samples x channels) WAV atomically, creating its folder.

    Samples are clipped to [-1, 1] for integer subtypes. Returns the path written.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim not in (1, 2) or wave.shape[0] == 0:
        raise InputError(f"{path}: cannot write audio of shape {wave.shape}")
    if subtype.startswith("PCM"):
        wave = np.clip(wave, -1.0, 1.0)
    with atomic_write(path, suffix=".tmp", make_parents=True) as tmp:
        soundfile.write(str(tmp), wave, int(sample_rate), subtype=subtype, format="WAV")
    return Path(path)
