"""Hostile inputs and outputs through the real CLI (issue 10, items 2, 5, 7, 9): each test builds
the hostile file itself. The contract: exit 2, one line ``lrp-onnx: error: ...``, no traceback,
nothing written or replaced (no temporary file left behind either)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import struct
import subprocess
import zipfile
import zlib

import numpy as np
import onnx
import pytest
import soundfile
from lrp_onnx.runtime import io as runtime_io
from test_bad_input import assert_clean_error


@pytest.fixture
def x_npy(tmp_path, tiny_input):
    path = tmp_path / "x.npy"
    np.save(path, tiny_input)
    return path


@pytest.fixture
def out_dir(tmp_path):
    path = tmp_path / "out"
    path.mkdir()
    return path


# -- item 2: outputs replace only regular files ----------------------------------------------------
def hostile_targets(out_dir):
    """{name: path} of output targets that are not regular files (made here, inside out_dir)."""
    fifo = out_dir / "fifo"
    os.mkfifo(fifo)
    folder = out_dir / "folder"
    folder.mkdir()
    links = {"link-to-dev-null": "/dev/null", "link-to-fifo": str(fifo), "link-to-folder": str(folder)}
    for name, target in links.items():
        os.symlink(target, out_dir / name)
    return {"fifo": fifo, **{name: out_dir / name for name in links}}


def snapshot(folder):
    """What each entry of ``folder`` is (kind, link target), to show nothing was replaced."""
    result = {}
    for name in sorted(os.listdir(folder)):
        st = os.lstat(folder / name)
        result[name] = (stat.S_IFMT(st.st_mode), os.readlink(folder / name) if stat.S_ISLNK(st.st_mode) else None)
    return result


@pytest.mark.parametrize("target", ["fifo", "link-to-dev-null", "link-to-fifo", "link-to-folder"])
def test_outputs_never_replace_what_is_not_a_regular_file(cli, tiny_cnn, x_npy, out_dir, target):
    path = hostile_targets(out_dir)[target]
    before = snapshot(out_dir)
    for argv in (("explain", tiny_cnn, x_npy, "-o", path), ("explain", tiny_cnn, x_npy, "--plot", path),
                 ("compile", tiny_cnn, "-o", path)):
        assert_clean_error(cli(*argv), target)
        assert snapshot(out_dir) == before  # the fifo is a fifo, each link still the same link
    assert os.path.exists("/dev/null") and stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_device_is_refused_before_anything_is_made():
    with pytest.raises(runtime_io.InputError, match="character device"):
        runtime_io.check_output_path("/dev/null")


def test_a_link_to_a_regular_file_is_replaced_not_followed(cli, tiny_cnn, x_npy, out_dir, tmp_path):
    kept = tmp_path / "kept.npy"
    kept.write_bytes(b"not touched")
    os.symlink(kept, out_dir / "r.npy")
    res = cli("explain", tiny_cnn, x_npy, "-o", out_dir / "r.npy")
    assert res.rc == 0, res.err
    assert kept.read_bytes() == b"not touched"
    assert not (out_dir / "r.npy").is_symlink() and np.load(out_dir / "r.npy").shape == (1, 7, 7)


def test_one_bad_output_refuses_before_the_others_are_written(cli, tiny_cnn, x_npy, out_dir):
    os.mkfifo(out_dir / "h.png")
    assert_clean_error(cli("explain", tiny_cnn, x_npy, "-o", out_dir / "r.npy", "--plot", out_dir / "h.png"),
                       "h.png")
    assert sorted(os.listdir(out_dir)) == ["h.png"]


# -- item 5: .npz decoded inside the error handler, with bounded memory -------------------------------
def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=array.dtype == object)
    return buf.getvalue()


def npy_header(shape, descr="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()  # magic, version and header: what np.save writes before the data


def write_npz(path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def zeros_bomb(path, name: str, header: bytes, zeros: int):
    """A deflated member ``name``: ``header`` then ``zeros`` zero bytes, built from one repeated
    fully-flushed block so that tens of MB cost a few kB (and no time) to build."""
    block = 1 << 20
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(header) + comp.flush(zlib.Z_FULL_FLUSH)
    one = comp.compress(bytes(block)) + comp.flush(zlib.Z_FULL_FLUSH)
    stream = head + one * (zeros // block) + comp.flush(zlib.Z_FINISH)
    crc = zlib.crc32(header)
    for _ in range(zeros // block):
        crc = zlib.crc32(bytes(block), crc)
    # the archive by hand (zipfile would compress the data itself): local header, data, central directory
    size = len(header) + (zeros // block) * block
    fname = name.encode()
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(stream), size, len(fname), 0) + fname
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(stream), size,
                          len(fname), 0, 0, 0, 0, 0, 0) + fname
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local) + len(stream), 0)
    path.write_bytes(local + stream + central + end)
    return path


def test_a_zip_bomb_is_refused_from_its_header_before_decompressing(cli, tiny_cnn, tmp_path, out_dir,
                                                                     monkeypatch):
    """64 MB of zeros in a few kB; the array limit set to 8 MB for the test (a setting)."""
    bomb = zeros_bomb(tmp_path / "bomb.npz", "x.npy", npy_header((16 << 20,)), 64 << 20)
    assert bomb.stat().st_size < 200_000
    monkeypatch.setattr(runtime_io, "MAX_ARRAY_BYTES", 8 << 20, raising=False)
    assert_clean_error(cli("explain", tiny_cnn, bomb, "-o", out_dir / "r.npy"), "bomb.npz", "limit")
    assert not os.listdir(out_dir)


def test_an_array_header_claiming_a_terabyte_is_refused(cli, tiny_cnn, tmp_path, out_dir):
    path = write_npz(tmp_path / "huge.npz", {"x.npy": npy_header((1 << 38, 1, 7, 7)) + bytes(1000)})
    assert_clean_error(cli("explain", tiny_cnn, path, "-o", out_dir / "r.npy"), "huge.npz", "limit")
    npy = tmp_path / "huge.npy"
    npy.write_bytes(npy_header((1 << 38, 1, 7, 7)) + bytes(1000))
    assert_clean_error(cli("explain", tiny_cnn, npy, "-o", out_dir / "r.npy"), "huge.npy")
    assert not os.listdir(out_dir)


def broken_archives(tmp_path, tiny_input) -> dict:
    good = npy_bytes(np.repeat(tiny_input[None], 2, axis=0))
    write_npz(tmp_path / "ok.npz", {"x.npy": good}, compression=zipfile.ZIP_STORED)
    crc_broken = bytearray((tmp_path / "ok.npz").read_bytes())
    at = crc_broken.index(good[-16:])  # a data byte of the stored member: the CRC no longer matches
    crc_broken[at] ^= 0xFF
    deflated = bytearray(write_npz(tmp_path / "d.npz", {"x.npy": good}).read_bytes())
    deflated[60:90] = b"\xff" * 30  # inside the deflate stream
    return {
        "object-array": write_npz(tmp_path / "object.npz", {"x.npy": npy_bytes(np.array([{"a": 1}], dtype=object))}),
        "not-npy-member": write_npz(tmp_path / "text.npz", {"x.npy": b"just text, no magic"}),
        "truncated-member": write_npz(tmp_path / "short.npz", {"x.npy": good[:-100]}),
        "bad-crc": _write(tmp_path / "crc.npz", bytes(crc_broken)),
        "bad-deflate": _write(tmp_path / "deflate.npz", bytes(deflated)),
        "truncated-zip": _write(tmp_path / "cut.npz", (tmp_path / "ok.npz").read_bytes()[:-30]),
        "no-arrays": write_npz(tmp_path / "empty.npz", {"readme.txt": b"hello"}),
        "bad-header-dict": write_npz(tmp_path / "dict.npz",
                                     {"x.npy": b"\x93NUMPY\x01\x00\x16\x00{'descr': <f4, }      \n"}),
    }


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", ["object-array", "not-npy-member", "truncated-member", "bad-crc", "bad-deflate",
                                  "truncated-zip", "no-arrays", "bad-header-dict"])
def test_broken_npz_inputs_are_one_line_errors(cli, tiny_cnn, tmp_path, tiny_input, out_dir, case):
    path = broken_archives(tmp_path, tiny_input)[case]
    assert_clean_error(cli("explain", tiny_cnn, path, "-o", out_dir / "r.npy"), path.name)
    assert not os.listdir(out_dir)


def test_labels_bomb_in_flip_data_is_refused(cli, tiny_cnn, tmp_path, out_dir, monkeypatch):
    """DATA for flip/augment: the label array ``y`` is bounded like the inputs."""
    x = npy_bytes(np.zeros((4, 1, 7, 7), np.float32))
    path = tmp_path / "data.npz"
    write_npz(path, {"x.npy": x, "y.npy": npy_header((1 << 40,), "<i8") + bytes(64)})
    assert_clean_error(cli("flip", tiny_cnn, path, "-o", out_dir / "f.json", "--no-progress"), "data.npz", "limit")
    assert_clean_error(cli("augment", tiny_cnn, path, "-o", out_dir / "a.npz", "--no-progress"), "data.npz")
    assert not os.listdir(out_dir)


# -- item 7: recordings whose header lies, unwritable folders, full disks ------------------------------
def flac_claiming(samples: int, path):
    buf = io.BytesIO()
    soundfile.write(buf, np.zeros(1600, np.float32), 16000, format="FLAC")
    data = bytearray(buf.getvalue())
    at = 8 + 10  # STREAMINFO: sample rate (20 bits), channels (3), bits (5), total samples (36)
    word = int.from_bytes(data[at:at + 8], "big")
    word = (word & ~((1 << 36) - 1)) | samples
    data[at:at + 8] = word.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


def test_a_flac_claiming_billions_of_samples_is_refused(cli, tmp_path, out_dir):
    from _server_fixtures import spectrogram_model

    model = tmp_path / "m.onnx"
    onnx.save(spectrogram_model(), str(model))
    flac = flac_claiming((1 << 36) - 1, tmp_path / "liar.flac")
    assert soundfile.info(str(flac)).frames == (1 << 36) - 1  # what the header says
    assert_clean_error(cli("explain", model, flac, "-o", out_dir / "r.npy"), "liar.flac", "limit")
    assert not os.listdir(out_dir)


@contextlib.contextmanager
def mounted_tmpfs(folder, options: str):
    """A tmpfs mounted on ``folder`` (needs root); skips the test where it cannot be mounted."""
    folder.mkdir(exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()[:100]}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@contextlib.contextmanager
def unwritable_folder(folder):
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
    else:  # root writes through permission bits: a read-only file system instead
        with mounted_tmpfs(folder, "ro,size=64k") as path:
            yield path


def test_an_unwritable_output_folder_is_one_line(cli, tiny_cnn, x_npy, tmp_path):
    with unwritable_folder(tmp_path / "locked") as locked:
        for argv in (("explain", tiny_cnn, x_npy, "-o", locked / "r.npy"),
                     ("explain", tiny_cnn, x_npy, "--plot", locked / "h.png"),
                     ("compile", tiny_cnn, "-o", locked / "e.onnx")):
            assert_clean_error(cli(*argv), str(locked))
        assert not os.listdir(locked)


def test_a_full_disk_is_one_line_and_leaves_nothing(cli, tiny_cnn, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).standard_normal((400, 1, 7, 7)).astype(np.float32))  # 78 kB out
    with mounted_tmpfs(tmp_path / "small", "size=16k") as small:
        res = cli("explain", tiny_cnn, x, "-o", small / "r.npy")
        assert_clean_error(res, "r.npy", "cannot write")
        assert not os.listdir(small)


def test_a_file_size_limit_is_one_line_and_leaves_nothing(cli_process, tiny_cnn, tmp_path):
    """The same as a full disk without root: the child may write files of at most 4 kB."""
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).standard_normal((400, 1, 7, 7)).astype(np.float32))
    out = tmp_path / "out"
    out.mkdir()
    prelude = "import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "LRP_ONNX_CACHE": str(tmp_path / "cache")}
    res = cli_process("explain", tiny_cnn, x, "-o", out / "r.npy", prelude=prelude, env=env)
    assert_clean_error(res, "r.npy", "cannot write")
    assert not os.listdir(out)


# -- item 9: labels from a model's metadata -------------------------------------------------------
def model_with_labels(build_model, tmp_path, labels):
    from test_cli import labelled_gemm

    model = labelled_gemm(build_model)
    for prop in model.metadata_props:
        if prop.key == "lrp_onnx.labels":
            prop.value = json.dumps(labels)
    path = tmp_path / "labelled.onnx"
    onnx.save(model, str(path))
    np.save(tmp_path / "x.npy", np.ones((8, 8), np.float32))
    return path, tmp_path / "x.npy"


def test_terminal_escape_codes_in_labels_are_not_printed(cli, build_model, tmp_path):
    evil = "\x1b]0;pwned\x07\x1b[2J\x1b[31mhigh\nsample 9: predicted nothing"
    path, x = model_with_labels(build_model, tmp_path, ["low", evil])
    res = cli("explain", path, x, "--target", "1")
    assert res.rc == 0, res.err
    assert "\x1b" not in res.out and "\x07" not in res.out
    assert len(res.out.strip().splitlines()) == 1  # the label cannot add a line either
    assert "\\x1b" in res.out  # shown escaped, not dropped silently
    res = cli("explain", path, x, "--target", "1", "--json")
    assert json.loads(res.out)["target_label"] == evil  # JSON carries the exact label, escaped by JSON


@pytest.mark.parametrize("label", [r"$\frac{$", "$" + "{" * 400 + "$", r"$\undefinedmacro$", "a\x00b\tc"])
def test_labels_are_drawn_literally_and_never_crash_plotting(cli, build_model, tmp_path, label):
    path, x = model_with_labels(build_model, tmp_path, ["low", label])
    out = tmp_path / "h.png"
    res = cli("explain", path, x, "--target", "1", "--plot", out)
    assert res.rc == 0, res.err
    assert out.stat().st_size > 1000


def test_error_messages_stay_one_line_whatever_the_model_names(cli, tmp_path, build_model):
    """A node name with a line break and escape codes, quoted in an error, prints as one line."""
    from onnx import helper

    nodes = [helper.make_node("Gemm", ["x", "W"], ["h"], name="fc", transB=1),
             helper.make_node("Erf", ["h"], ["y"], name="erf\n\x1b[31mlrp-onnx: fake second line")]
    model = build_model(nodes, {"x": ["N", 4]}, {"y": ["N", 3]}, {"W": np.ones((3, 4))})
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    res = cli("check", path)
    assert_clean_error(res, "erf")
    assert "\x1b" not in res.err
