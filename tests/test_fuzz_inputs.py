"""A bounded fuzz test of the loaders a stranger's file reaches (issue 10): ``.npy``/``.npz``
bytes and WAV/FLAC headers, mutated from valid files by hypothesis. Whatever the bytes, a
loader returns a value or raises the project's own error (:class:`LRPError`), never another
exception."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lrp_onnx.audio.io import load_audio
from lrp_onnx.lrp_graph.errors import LRPError
from lrp_onnx.runtime.inputs import NpzData
from lrp_onnx.runtime.io import load_npy

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _npz(compressed: bool) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    arrays = {"x": rng.standard_normal((3, 1, 4, 4)).astype(np.float32), "y": np.array([0, 1, 0]),
              "labels": np.array(["a", "b"])}
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def _audio(fmt: str) -> bytes:
    buf = io.BytesIO()
    wave = (0.1 * np.sin(np.arange(800) / 5)).astype(np.float32)
    soundfile.write(buf, np.stack([wave, wave], axis=1), 8000, format=fmt, subtype="PCM_16")
    return buf.getvalue()


SEEDS = {"npy": _npy(np.arange(24, dtype=np.float32).reshape(2, 3, 4)), "npz": _npz(False),
         "npz-deflated": _npz(True), "wav": _audio("WAV"), "flac": _audio("FLAC")}


@st.composite
def mutated(draw, seed: bytes, head: int | None = None):
    """``seed`` with a few bytes overwritten (in its first ``head`` bytes, where the headers are),
    optionally truncated or extended."""
    data = bytearray(seed)
    span = min(len(data), head or len(data))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, span - 1))
        data[at] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, data[at] ^ 1, draw(st.integers(0, 255))]))
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    if cut is not None:
        data = data[:cut]
    return bytes(data) + draw(st.binary(max_size=16))


def _only_project_errors(call):
    try:
        call()
    except LRPError:
        pass


@pytest.mark.parametrize("kind", ["npy", "npz", "npz-deflated"])
def test_arrays(tmp_path, kind):
    path = tmp_path / ("input.npz" if kind.startswith("npz") else "input.npy")

    @FUZZ
    @given(data=mutated(SEEDS[kind], head=None if kind == "npy" else 400))
    def check(data):
        path.write_bytes(data)
        _only_project_errors(lambda: load_npy(path))
        if kind != "npy":
            _only_project_errors(lambda: NpzData(path))

    check()


@pytest.mark.parametrize("kind", ["wav", "flac"])
def test_audio_headers(tmp_path, kind):
    path = tmp_path / f"input.{kind}"

    @FUZZ
    @given(data=mutated(SEEDS[kind], head=96))
    def check(data):
        path.write_bytes(data)
        _only_project_errors(lambda: load_audio(path))

    check()


def test_npz_members_with_crafted_headers(tmp_path):
    """Random shapes and dtypes in the header of a member whose data is short: refused, not allocated."""
    path = tmp_path / "crafted.npz"

    @FUZZ
    @given(shape=st.lists(st.integers(0, 1 << 40), min_size=1, max_size=4),
           descr=st.sampled_from(["<f4", "<f8", "|u1", "<i8", "|O", "<U5", "V8", "|b1"]),
           fortran=st.booleans(), tail=st.binary(max_size=64))
    def check(shape, descr, fortran, tail):
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": fortran,
                                                      "shape": tuple(shape)})
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("x.npy", header.getvalue() + tail)
            zf.writestr("y.npy", header.getvalue() + tail)
        _only_project_errors(lambda: load_npy(path))
        _only_project_errors(lambda: NpzData(path))

    check()
