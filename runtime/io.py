"""Files written whole or not at all, and arrays read with clear errors and bounded memory.

Writing: :func:`atomic_write` creates or replaces only a regular file (or a symbolic link
to one, which is replaced, never followed); a device, fifo, socket, folder or a link to any
of them is refused, so ``-o /dev/null`` run as root cannot replace the device node. Errors
of the operating system (no permission, a full disk) become one-line :class:`InputError`\\ s
naming the output, and the temporary file is removed.

Reading: :func:`load_npy` reads ``.npy`` and ``.npz`` (the array ``x``, else the first)
without pickles; the size an array's header announces is checked against
:data:`MAX_ARRAY_BYTES` before anything is read or decompressed (no zip bombs), and every
decoding error is an :class:`InputError`.
"""
from __future__ import annotations

import contextlib
import errno
import math
import os
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile

from ..lrp_graph.errors import InputError

#: largest array (in bytes, decompressed) read from a .npy or .npz file
MAX_ARRAY_BYTES = 1 << 30
#: errors of the machine while writing that are reported as one line naming the output
_WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


# --------------------------------------------------------------------------- writing


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a fifo"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def check_output_path(path: str | os.PathLike, *, make_parents: bool = False) -> Path:
    """``path`` if an output may be written there: it does not exist, or it is a regular file,
    or a symbolic link to one (the link is replaced); and its folder exists (or, with
    ``make_parents``, can be made). Otherwise :class:`InputError`."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:  # e.g. a path through a file, or too long
        raise InputError(f"{path}: cannot write an output there ({exc.strerror})") from None
    if st is not None and stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(path)
        except OSError:
            st = None  # a dangling link: replaced by the output
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path}: is a link to {_kind(st.st_mode)}; an output only replaces a regular file")
    elif st is not None and not stat.S_ISREG(st.st_mode):
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{path}: is a directory; give the output a file name")
        raise InputError(f"{path}: is {_kind(st.st_mode)}; an output only replaces a regular file")
    parent = path.parent
    if make_parents and not parent.is_dir():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"{path}: cannot make its folder ({exc.strerror})") from None
    if not parent.is_dir():
        raise InputError(f"{path}: output folder '{parent}' does not exist")
    return path


def check_outputs(*paths: str | os.PathLike | None) -> None:
    """:func:`check_output_path` for every given output, before any work: a command with several
    outputs refuses a bad one before it writes the others."""
    for path in paths:
        if path is not None:
            check_output_path(path)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, suffix: str | None = None, *, make_parents: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    ``suffix`` (default: ``path``'s own) keeps writers that infer the format from the
    name (numpy, matplotlib, soundfile) working. ``make_parents`` creates missing folders
    (caches, checkpoints); otherwise a missing output folder is an error (user outputs).
    ``path`` must be a regular file or not exist (:func:`check_output_path`), checked
    before the temporary file is made and again just before it replaces ``path``.
    """
    path = check_output_path(path, make_parents=make_parents)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix,
                                   dir=path.parent)
    except OSError as exc:
        raise InputError(f"{path}: cannot write in folder '{path.parent}' ({exc.strerror})") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
        except OSError as exc:
            if exc.errno is None or exc.errno in _WRITE_ERRNOS:  # numpy's failed writes carry no errno
                raise InputError(f"{path}: cannot write ({_os_reason(exc)})") from None
            raise
        check_output_path(path)  # nothing became a device or a folder meanwhile
        try:
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
            os.replace(tmp_path, path)
        except OSError as exc:
            raise InputError(f"{path}: cannot write ({_os_reason(exc)})") from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _os_reason(exc: OSError) -> str:
    if exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split())[:200]
    return f"{text}; is the disk full?" if text else "is the disk full?"


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


# --------------------------------------------------------------------------- reading arrays


def read_npy_header(f: BinaryIO, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) from the header of a ``.npy`` stream, which is left at the
    data. Refuses arrays of Python objects (they are pickles)."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]} is not read")
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure of untrusted bytes
        raise InputError(f"{where}: not a .npy array ({_reason(exc)})") from None
    if dtype.hasobject:
        raise InputError(f"{where}: holds Python objects ({dtype}); only plain arrays are read (no pickles)")
    if any(d < 0 for d in shape):
        raise InputError(f"{where}: invalid shape {shape}")
    if dtype.itemsize == 0 and math.prod(shape):
        raise InputError(f"{where}: dtype {dtype} has no size")
    return tuple(int(d) for d in shape), bool(fortran), dtype


def read_npy(f: BinaryIO, where: str, *, max_bytes: int | None = None, available: int | None = None) -> np.ndarray:
    """The array of a ``.npy`` stream (a file or an archive member), reading no more than its
    header announces, and refusing one larger than ``max_bytes`` (default
    :data:`MAX_ARRAY_BYTES`) or than the ``available`` bytes before reading it."""
    limit = MAX_ARRAY_BYTES if max_bytes is None else max_bytes
    start = f.tell() if available is not None else 0
    shape, fortran, dtype = read_npy_header(f, where)
    count = math.prod(shape)
    size = count * dtype.itemsize
    if size > limit:
        raise InputError(f"{where}: array of shape {shape} ({dtype}) is {_mb(size)}, more than the limit of "
                         f"{_mb(limit)}")
    if available is not None and size > available - (f.tell() - start):
        raise InputError(f"{where}: truncated (its header announces {_mb(size)} of data)")
    data = bytearray(size)
    view, got = memoryview(data), 0
    while got < size:
        n = f.readinto(view[got:]) if hasattr(f, "readinto") else _read_into(f, view[got:])
        if not n:
            raise InputError(f"{where}: truncated (its header announces {_mb(size)} of data, found {_mb(got)})")
        got += n
    array = np.frombuffer(data, dtype=dtype, count=count)
    return array.reshape(shape, order="F" if fortran else "C")


def _read_into(f, view: memoryview) -> int:
    chunk = f.read(len(view))
    view[:len(chunk)] = chunk
    return len(chunk)


def npz_member(archive: zipfile.ZipFile, key: str, where: str, *, max_bytes: int | None = None) -> np.ndarray:
    """Array ``key`` of an open ``.npz`` archive, bounded like :func:`read_npy`."""
    info = archive.getinfo(f"{key}.npy")
    with archive.open(info) as f:
        return read_npy(f, f"{where}: {key!r}", max_bytes=max_bytes, available=info.file_size)


def load_npy(path: str | os.PathLike, *, max_bytes: int | None = None) -> np.ndarray:
    """Load an array from ``.npy`` (or ``x``, else the first array, of an ``.npz``) with one-line
    errors; see :func:`read_npy` for the size limit."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a .npy array")
    try:
        with open(path, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"
            f.seek(0)
            if not is_zip:
                return read_npy(f, str(path), max_bytes=max_bytes, available=os.fstat(f.fileno()).st_size)
        with zipfile.ZipFile(path) as archive:
            keys = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
            if not keys:
                raise InputError(f"{path}: empty .npz archive (no .npy arrays)")
            return npz_member(archive, "x" if "x" in keys else keys[0], str(path), max_bytes=max_bytes)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure of an untrusted file: one line
        raise InputError(f"{path}: not a readable .npy/.npz array ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 10**12 else f"{n:.3g} bytes"


# --------------------------------------------------------------------------- writing audio


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
