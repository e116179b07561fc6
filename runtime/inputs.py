"""Labelled data for pixel-flipping and augmentation, streamed in batches.

DATA is one of

* a corpus folder in the AudioMNIST layout (``NN/D_NN_R.wav`` + ``audioMNIST_meta.txt``,
  read by :mod:`lrp_onnx.audio.corpora`, which needs no torch) or a speaker-ID corpus;
  labels follow the model's task (``lrp_onnx.task``: gender, digit or speaker);
* a manifest ``.csv`` with a header naming the columns ``path`` (relative to the CSV's
  folder) and ``label`` (a class name the model knows, or a class index);
* an ``.npz`` with inputs ``x`` (N, ...) and labels ``y`` (N,), and optionally class
  names ``labels``; ``x`` is read row by row from the archive, never whole.

Recordings become model inputs with the feature spec stored in the model
(``lrp_onnx.features``) at explain-time placement. :func:`open_data` checks labels and
input shapes against the model before anything runs, so bad DATA fails fast with one
line. :class:`NpzWriter` writes such archives a batch at a time, atomically.
"""
from __future__ import annotations

import csv
import hashlib
import os
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..lrp_graph.errors import InputError
from .io import MAX_ARRAY_BYTES, atomic_write, npz_member, read_npy_header

__all__ = ["ArrayData", "NpzData", "NpzWriter", "RecordingData", "balanced_indices", "open_data"]

Batch = tuple[int, np.ndarray, np.ndarray]  # (global index of the first sample, x, y)


class _Data:
    """Common interface: ``len``, ``input_shape``, ``labels`` (N,), ``batches``, ``identity``."""

    name: str
    labels: np.ndarray
    input_shape: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, start: int = 0) -> Iterator[Batch]:
        for i in range(start, len(self), batch_size):
            j = min(i + batch_size, len(self))
            yield i, self.inputs(i, j), self.labels[i:j]

    def inputs(self, i: int, j: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def identity(self) -> str:
        """A fingerprint of the samples and labels (for --resume)."""
        return hashlib.sha256(f"{self.name}\n{self._identity()}\n".encode() + self.labels.tobytes()).hexdigest()[:20]

    def _identity(self) -> str:
        return ""

    def describe(self) -> dict:
        counts = np.bincount(self.labels) if len(self.labels) else np.zeros(0, int)
        return {"source": self.name, "samples": len(self), "per_class": counts.tolist()}


class ArrayData(_Data):
    """In-memory inputs ``x`` (N, ...) and labels ``y`` (N,)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, name: str = "arrays"):
        self.x, self.labels, self.name = x, np.asarray(y, dtype=np.int64), name
        if len(self.x) != len(self.labels):
            raise InputError(f"{name}: {len(self.x)} inputs but {len(self.labels)} labels")
        self.input_shape = tuple(int(d) for d in x.shape[1:])

    def inputs(self, i: int, j: int) -> np.ndarray:
        return np.ascontiguousarray(self.x[i:j], dtype=np.float32)

    def _identity(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.x).tobytes()).hexdigest()


class NpzData(_Data):
    """Inputs read row by row from ``x.npy`` inside an ``.npz`` (stored or deflated)."""

    def __init__(self, path: str | os.PathLike, key: str = "x", label_key: str = "y",
                 rows: np.ndarray | None = None):
        self.path, self.key = Path(path), key
        self.name = str(self.path)
        try:
            with zipfile.ZipFile(self.path) as zf:
                names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
                if key not in names or label_key not in names:
                    raise InputError(f"{self.path}: expected arrays {key!r} and {label_key!r}, found "
                                     f"{', '.join(sorted(names)) or 'none'}")
                with zf.open(f"{key}.npy") as f:
                    self._shape, self._dtype, self._offset = _npy_header(f, self.path, key)
                y = npz_member(zf, label_key, str(self.path))
                names_array = npz_member(zf, "labels", str(self.path)) if "labels" in names else None
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - any decoding failure of an untrusted archive: one line
            raise InputError(f"{self.path}: not a readable .npz archive ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:200]})") from None
        self.names = None if names_array is None else [str(n) for n in names_array.reshape(-1)]
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise InputError(f"{self.path}: {label_key!r} must be integer class labels of shape (N,), "
                             f"got {y.dtype} {y.shape}")
        if len(y) != self._shape[0]:
            raise InputError(f"{self.path}: {self._shape[0]} inputs but {len(y)} labels")
        self.rows = np.arange(len(y)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.raw_labels = y.astype(np.int64)
        self.labels = self.raw_labels[self.rows]
        self.input_shape = tuple(int(d) for d in self._shape[1:])
        self._row_bytes = int(np.prod(self.input_shape)) * self._dtype.itemsize

    def subset(self, rows: np.ndarray) -> NpzData:
        other = NpzData.__new__(NpzData)
        other.__dict__.update(self.__dict__)
        other.rows = self.rows[np.asarray(rows, dtype=np.int64)]
        other.labels = self.raw_labels[other.rows]
        return other

    def inputs(self, i: int, j: int) -> np.ndarray:
        wanted = self.rows[i:j]
        lo, hi = int(wanted.min()), int(wanted.max()) + 1
        with zipfile.ZipFile(self.path) as zf, zf.open(f"{self.key}.npy") as f:
            f.seek(self._offset + lo * self._row_bytes)
            raw = f.read((hi - lo) * self._row_bytes)
        if len(raw) != (hi - lo) * self._row_bytes:
            raise InputError(f"{self.path}: {self.key!r} is truncated")
        block = np.frombuffer(raw, dtype=self._dtype).reshape(hi - lo, *self.input_shape)
        return np.ascontiguousarray(block[wanted - lo], dtype=np.float32)

    def _identity(self) -> str:
        st = self.path.stat()
        return f"{self.path.resolve()}\t{st.st_size}\t{st.st_mtime_ns}\t{self.rows.tobytes().hex()[:64]}\t{len(self.rows)}"


def _npy_header(f, path: Path, key: str):
    """(shape, dtype, data offset) of the inputs array, which is read row by row later."""
    shape, fortran, dtype = read_npy_header(f, f"{path}: {key!r}")
    if fortran or dtype.kind not in "fiu":
        raise InputError(f"{path}: {key!r} must be a C-ordered numeric array, got {dtype}"
                         f"{' (Fortran order)' if fortran else ''}")
    if len(shape) < 2:
        raise InputError(f"{path}: {key!r} must have shape (N, ...) with one input per row, got {shape}")
    if int(np.prod(shape[1:], dtype=object)) * dtype.itemsize > MAX_ARRAY_BYTES:
        raise InputError(f"{path}: {key!r} rows of shape {shape[1:]} are larger than {MAX_ARRAY_BYTES} bytes each")
    return shape, dtype, f.tell()


class RecordingData(_Data):
    """Recordings turned into model inputs by a feature spec, one batch at a time."""

    def __init__(self, paths: Sequence[str | os.PathLike], labels: np.ndarray, spec, name: str):
        self.paths = [Path(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.spec, self.name = spec, name
        self.input_shape = tuple(int(d) for d in spec.shape)

    def inputs(self, i: int, j: int) -> np.ndarray:
        return np.stack([self.spec.from_file(p) for p in self.paths[i:j]]).astype(np.float32)

    def subset(self, rows: np.ndarray) -> RecordingData:
        return RecordingData([self.paths[r] for r in rows], self.labels[rows], self.spec, self.name)

    def _identity(self) -> str:
        h = hashlib.sha256(self.spec.model_dump_json().encode())
        for p in self.paths:
            st = p.stat()
            h.update(f"{p.resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


# --------------------------------------------------------------------------- opening DATA


def open_data(source: str | os.PathLike, explainer, *, limit: int | None = None, seed: int = 0) -> _Data:
    """DATA (folder, manifest .csv or .npz) for ``explainer``'s model, checked against it.

    Labels must be classes the model knows and inputs must have its input shape;
    ``limit`` keeps a class-balanced, seeded subset of at most that many samples.
    """
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such DATA file or folder")
    model_labels = explainer.labels
    if path.is_dir():
        data = _folder_data(path, explainer)
    elif path.suffix.lower() == ".csv":
        data = _manifest_data(path, explainer)
    elif path.suffix.lower() == ".npz":
        data = NpzData(path)
        data.raw_labels = _map_npz_labels(data, model_labels, explainer.num_classes)
        data.labels = data.raw_labels[data.rows]
    else:
        raise InputError(f"{path}: DATA must be a corpus folder, a manifest .csv or an .npz of x and y")
    if len(data) == 0:
        raise InputError(f"{path}: holds no samples")
    want = tuple(explainer.input_shape)
    got = tuple(data.input_shape)
    if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
        raise InputError(f"{path}: inputs have shape {got} per sample; the model expects "
                         f"({', '.join('?' if w is None else str(w) for w in want)})")
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit must be >= 1, got {limit}")
        data = data.subset(balanced_indices(data.labels, limit, seed)) if limit < len(data) else data
    return data


def _map_npz_labels(data: NpzData, model_labels: list[str] | None, num_classes: int) -> np.ndarray:
    y = data.raw_labels
    if data.names is not None and model_labels is not None:
        if data.names != model_labels:
            unknown = sorted({data.names[i] for i in np.unique(y) if 0 <= i < len(data.names)} - set(model_labels))
            if unknown:
                raise InputError(f"{data.path}: labels {', '.join(map(repr, unknown))} are not classes of the model "
                                 f"({', '.join(model_labels)})")
        if y.size and (y.min() < 0 or y.max() >= len(data.names)):
            raise InputError(f"{data.path}: label index {int(y.max() if y.max() >= len(data.names) else y.min())} "
                             f"is outside its {len(data.names)} label names")
        lookup = np.asarray([model_labels.index(n) if n in model_labels else -1 for n in data.names])
        return lookup[y]
    bad = (y < 0) | (y >= (num_classes if num_classes is not None else np.iinfo(np.int64).max))
    if bad.any():
        known = "0 or more" if num_classes is None else f"it has {num_classes}: 0 to {num_classes - 1}"
        raise InputError(f"{data.path}: label {int(y[bad][0])} is not a class of the model ({known})")
    return y


def _feature_spec(explainer, path: Path):
    spec = explainer.metadata.feature_spec()
    if spec is None:
        raise InputError(f"{path}: recordings need a model with feature metadata (lrp_onnx.features); "
                         "export it with lrp-onnx export, or give DATA as an .npz of inputs")
    return spec


def model_task(explainer) -> str:
    """The model's task (metadata ``lrp_onnx.task``), else guessed from its labels."""
    task = explainer.metadata.task
    if task:
        return task
    labels = explainer.labels or []
    if labels == ["male", "female"]:
        return "gender"
    if labels == [str(d) for d in range(10)]:
        return "digit"
    return "speaker"


def _folder_data(path: Path, explainer) -> RecordingData:
    spec = _feature_spec(explainer, path)
    from ..audio import corpora as corpus
    task = model_task(explainer)
    if task == "speaker":
        try:
            utterances = corpus.read_speaker_corpus(path)
        except InputError:
            utterances = corpus.read_audiomnist(path)
        names = [f"{u.speaker:02d}" for u in utterances]
    else:
        utterances = corpus.read_audiomnist(path)
        if task == "gender":
            names = [u.gender for u in utterances]
        elif task == "digit":
            names = [str(u.digit) for u in utterances]
        else:
            raise InputError(f"the model's task {task!r} has no labels in an AudioMNIST folder")
    labels = _label_indices(names, [u.path for u in utterances], explainer, path)
    return RecordingData([u.path for u in utterances], labels, spec, str(path))


def _manifest_data(path: Path, explainer) -> RecordingData:
    spec = _feature_spec(explainer, path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
            header = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: unreadable manifest ({exc})") from None
    if not rows:
        raise InputError(f"{path}: manifest holds no rows (expected a header 'path,label' and one line per recording)")
    if "path" not in header or "label" not in header:
        raise InputError(f"{path}: manifest header must name the columns 'path' and 'label', got {list(header)}")
    paths, names = [], []
    for line, row in enumerate(rows, start=2):
        if not row["path"]:
            raise InputError(f"{path}:{line}: empty path")
        p = Path(row["path"])
        paths.append(p if p.is_absolute() else path.parent / p)
        names.append((row["label"] or "").strip())
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"{path}: {len(missing)} listed recording(s) do not exist, e.g. {missing[0]}")
    return RecordingData(paths, _label_indices(names, paths, explainer, path), spec, str(path))


def _label_indices(names: Sequence[str], paths: Sequence, explainer, where: Path) -> np.ndarray:
    """Class indices for label names (or index strings) in the model's label order."""
    known = explainer.labels
    out = np.empty(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        if known is not None and name in known:
            out[i] = known.index(name)
        elif name.isdigit() and (explainer.num_classes is None or int(name) < explainer.num_classes) and not any(k.isdigit() for k in known or []):
            out[i] = int(name)  # a class index, where the class names are not numbers themselves
        else:
            what = f"classes {', '.join(known)}" if known else explainer.class_range()
            raise InputError(f"{where}: label {name!r} (of {paths[i]}) is not a class of the model; it knows {what}")
    return out


def balanced_indices(labels: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``limit`` samples, classes taken in turn (seeded)."""
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    chosen: list[int] = []
    while len(chosen) < min(limit, len(labels)):
        for pool in pools:
            if pool and len(chosen) < limit:
                chosen.append(int(pool.pop()))
    return np.sort(np.asarray(chosen, dtype=np.int64))


# --------------------------------------------------------------------------- writing .npz


class NpzWriter:
    """Write an ``.npz`` (uncompressed, zip64) one block of rows at a time; atomic.

        with NpzWriter("aug.npz") as w:
            w.begin("x", (n, 1, 227, 227), np.float32)
            for block in blocks: w.write(block)
            w.array("y", labels)

    The file appears only when the ``with`` block finishes without error and every
    array got exactly the rows it announced.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._ctx = atomic_write(self.path, suffix=".npz")
        self._zip = None
        self._member = None
        self._left = 0

    def __enter__(self) -> NpzWriter:
        tmp = self._ctx.__enter__()
        self._zip = zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        return self

    def begin(self, name: str, shape: tuple[int, ...], dtype) -> None:
        self._finish_member()
        dtype = np.dtype(dtype)
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                  "shape": tuple(int(s) for s in shape)}
        self._member = self._zip.open(f"{name}.npy", "w", force_zip64=True)
        np.lib.format.write_array_header_2_0(self._member, header)
        self._name, self._dtype, self._row_shape = name, dtype, tuple(shape[1:])
        self._left = int(shape[0])

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self._dtype)
        if block.shape[1:] != self._row_shape or len(block) > self._left:
            raise InputError(f"{self.path}: block of shape {block.shape} does not fit array {self._name!r}")
        self._member.write(block.tobytes())
        self._left -= len(block)

    def array(self, name: str, value: np.ndarray) -> None:
        """A whole (small) array at once."""
        value = np.asarray(value)
        if value.ndim == 0:
            raise InputError("NpzWriter.array needs an array with at least one axis")
        self.begin(name, value.shape, value.dtype)
        self.write(value)

    def _finish_member(self) -> None:
        if self._member is not None:
            if self._left:
                raise InputError(f"{self.path}: array {self._name!r} is missing {self._left} rows")
            self._member.close()
            self._member = None

    def __exit__(self, kind, value, tb) -> bool:
        try:
            if kind is None:
                self._finish_member()
            elif self._member is not None:
                self._member.close()
            self._zip.close()
        except BaseException as exc:
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return bool(self._ctx.__exit__(kind, value, tb))


def write_manifest(path: str | os.PathLike, paths: Sequence, labels: Sequence[str]) -> None:
    """A manifest .csv (``path,label``) with paths relative to its folder where possible."""
    path = Path(path)
    with atomic_write(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            for p, label in zip(paths, labels):
                p = Path(p)
                try:
                    p = Path(os.path.relpath(p.resolve(), path.parent.resolve()))
                except ValueError:
                    p = p.resolve()
                writer.writerow([str(p), label])

