"""The on-disk cache of compiled explainers, shared by processes.

Compiling an explainer costs a model load, an opset conversion and the compiler's pass
(about a second for the shipped AlexNet); a cached one is a file read. Layout, under
``$LRP_ONNX_CACHE/explainers`` (default ``~/.cache/lrp-onnx/explainers``)::

    models/<file sha256>.json      what lrp-onnx needs of a model file without parsing it:
                                   its lrp_onnx metadata and the sha256 of each external-data file
    files/<stamp>                  the sha256 of a file, by its path, inode, size and times
    <key>.onnx                     a compiled explainer
    <key>.json                     its compile-time facts (the names of the relevance steps)

``key = sha256(model digest, composite JSON, options, lrp-onnx version, compiler source hash)``. Every file is
written to a temporary name and renamed, and a ``.json`` is written after the file it
describes, so concurrent writers and readers only ever see whole entries. The cache
holds at most :data:`MAX_BYTES`; the least recently used entries go first.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .io import atomic_write

#: the cache keeps at most this many bytes of compiled explainers
MAX_BYTES = 4 << 30


def cache_root() -> Path:
    """lrp-onnx's cache folder: ``$LRP_ONNX_CACHE``, else ``$XDG_CACHE_HOME/lrp-onnx``, else
    ``~/.cache/lrp-onnx``; shared by the explainers here, training's decoded waveforms and the
    in-browser sites of ``serve --browser``, each in a folder of its own."""
    root = os.environ.get("LRP_ONNX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lrp-onnx")
    return Path(root)


def cache_dir() -> Path:
    """The compiled explainers' folder (``cache_root()/explainers``)."""
    return cache_root() / "explainers"


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def path_digest(path: Path) -> str:
    """sha256 of a file's content, remembered by its identity and times (device, inode, size,
    modification and change time in ns), so an unchanged file is not read again."""
    st = path.stat()
    stamp = entry_key("stat", str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    memo = cache_dir() / "files" / stamp
    try:
        digest = memo.read_text()
        if len(digest) == 64:
            return digest
    except OSError:
        pass
    digest = file_digest(path.read_bytes())
    _write(memo, digest.encode())
    return digest


def compiler_fingerprint() -> str:
    """A hash of the compiler's source files: a changed compiler (a development checkout, an
    upgrade without a version change) never gets an explainer compiled by another one."""
    global _FINGERPRINT
    if _FINGERPRINT is None:
        root = Path(__file__).resolve().parent.parent / "lrp_graph"
        digest = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
        _FINGERPRINT = digest.hexdigest()
    return _FINGERPRINT


_FINGERPRINT: str | None = None


def entry_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def read_model_facts(model_digest: str, folder: Path) -> dict | None:
    """The recorded facts of a model file, if its external-data files are unchanged."""
    facts = _read_json(cache_dir() / "models" / f"{model_digest}.json")
    if facts is None:
        return None
    for name, digest in facts.get("external", {}).items():
        try:
            if path_digest(folder / name) != digest:
                return None
        except OSError:
            return None
    return facts


def write_model_facts(model_digest: str, facts: dict) -> None:
    _write(cache_dir() / "models" / f"{model_digest}.json", json.dumps(facts).encode())


def read_explainer(key: str) -> tuple[bytes, dict] | None:
    """A cached compiled explainer and its facts, or None."""
    base = cache_dir()
    facts = _read_json(base / f"{key}.json")
    if facts is None:
        return None
    try:
        data = (base / f"{key}.onnx").read_bytes()
    except OSError:
        return None
    if len(data) != facts.get("size"):
        return None  # damaged or replaced: recompile (entries are written whole, then renamed)
    try:
        os.utime(base / f"{key}.json")  # mark as recently used
    except OSError:
        pass
    return data, facts


def write_explainer(key: str, data: bytes, facts: dict) -> None:
    """Store a compiled explainer; failures (read-only or full disk) only cost a recompile later."""
    base = cache_dir()
    try:
        _write(base / f"{key}.onnx", data)
        _write(base / f"{key}.json", json.dumps({**facts, "size": len(data)}).encode())
        _evict(base)
    except OSError:
        pass


def _evict(base: Path) -> None:
    entries = []
    for meta in base.glob("*.json"):
        onnx_file = meta.with_suffix(".onnx")
        try:
            entries.append((meta.stat().st_mtime, onnx_file.stat().st_size, meta, onnx_file))
        except OSError:
            continue
    total = sum(size for _, size, _, _ in entries)
    for _, size, meta, onnx_file in sorted(entries, key=lambda e: e[0]):
        if total <= MAX_BYTES:
            break
        meta.unlink(missing_ok=True)
        onnx_file.unlink(missing_ok=True)
        total -= size


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write(path: Path, data: bytes) -> None:
    try:
        with atomic_write(path, suffix=".tmp", make_parents=True) as tmp:
            tmp.write_bytes(data)
    except Exception:  # noqa: BLE001 - a cache that cannot be written is only a slower cache
        pass
