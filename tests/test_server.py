"""The HTTP service, over real HTTP: uvicorn on a free loopback port, every endpoint, every
bad input of issue 5, the token, overload (503) and micro-batching."""
from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
if importlib.util.find_spec("python_multipart") is None and importlib.util.find_spec("multipart") is None:
    pytest.skip("python-multipart is not installed", allow_module_level=True)
httpx = pytest.importorskip("httpx")

from _server_fixtures import LABELS, running_server, spectrogram_model, voice, write_wav  # noqa: E402
from conftest import tiny_cnn_model  # noqa: E402

from lrp_onnx.runtime import Explainer  # noqa: E402
from lrp_onnx.audio.features import SpectrogramSpec  # noqa: E402
from lrp_onnx.service.app import create_app  # noqa: E402

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BODY_MB = 2


@pytest.fixture(scope="module")
def models():
    return {"gender": Explainer(spectrogram_model(), composite="epsilon-plus"),
            "tiny": Explainer(tiny_cnn_model(), composite="epsilon")}


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    folder = tmp_path_factory.mktemp("examples")
    write_wav(folder / "female_test.wav", voice(0.7, 220, 16000, seed=1), 16000)
    write_wav(folder / "male_test.wav", voice(0.6, 110, 22050, seed=2), 22050)
    return folder


@pytest.fixture(scope="module")
def app(models, examples):
    return create_app(models, max_batch=8, max_body_mb=MAX_BODY_MB, token=TOKEN, timeout_s=10, queue_size=16,
                      read_timeout_s=1.0, max_audio_s=30, examples_dir=examples)


@pytest.fixture(scope="module")
def url(app):
    with running_server(app, header_timeout_s=1.0) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as c:
        yield c


@pytest.fixture
def wav_bytes(examples):
    return (examples / "female_test.wav").read_bytes()


def assert_error(response, status: int, fragment: str = ""):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == status and isinstance(body["error"], str) and "\n" not in body["error"]
    assert " at 0x" not in body["error"], body["error"]  # no object reprs
    assert fragment.lower() in body["error"].lower(), body["error"]


def assert_alive(client, wav: bytes):
    """The process is up and the next good request is answered."""
    r = client.post("/v1/models/gender/explain", params={"relevance": "none"}, content=wav,
                    headers={"content-type": "audio/wav"})
    assert r.status_code == 200, r.text
    assert r.json()["samples"][0]["label"] in LABELS


def tiny_input(n=1, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 1, 7, 7)).astype(np.float32)


# ------------------------------------------------------------------------------ endpoints
def test_healthz_needs_no_token(url):
    r = httpx.get(f"{url}/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "models": 2, "auth_required": True}


def test_models_lists_input_spec_labels_and_composites(client):
    r = client.get("/v1/models")
    assert r.status_code == 200
    info = {m["name"]: m for m in r.json()["models"]}
    assert set(info) == {"gender", "tiny"}
    g = info["gender"]
    assert g["input"] == {"name": "input", "shape": [1, 227, 227], "dtype": "float32"}
    assert g["labels"] == LABELS and g["task"] == "gender" and g["composite"] == "epsilon-plus"
    assert {"epsilon", "epsilon-plus", "paper-alexnet"} <= set(g["composites"])
    assert g["features"]["kind"] == "audiomnist-spectrogram" and "audio/wav" in g["accepts"]
    assert info["tiny"]["features"] is None and info["tiny"]["labels"] is None
    assert client.get("/v1/models/tiny").json()["input"]["shape"] == [1, 7, 7]
    assert_error(client.get("/v1/models/nope"), 404, "unknown model 'nope'")


def test_explain_wav_upload_matches_explainer(client, models, examples):
    path = examples / "male_test.wav"
    with open(path, "rb") as f:
        r = client.post("/v1/models/gender/explain", params={"heatmap": "true", "audible": "true"},
                        files={"file": ("male_test.wav", f, "audio/wav")})
    assert r.status_code == 200, r.text
    body = r.json()
    ex = models["gender"]
    from lrp_onnx.audio.io import load_audio

    wave, sr = load_audio(path)
    x = np.stack([s.features for s in SpectrogramSpec().segments(wave, sr)])
    e = ex.explain(x)
    assert body["input"] == "audio" and body["composite"] == "epsilon-plus" and body["note"] is None
    sample = body["samples"][0]
    assert sample["prediction"] == int(e.predictions[0]) and sample["label"] == LABELS[sample["prediction"]]
    assert sample["target"] == sample["prediction"]
    np.testing.assert_allclose(sample["logits"], e.logits[0], rtol=1e-5, atol=1e-6)
    assert abs(sum(sample["probabilities"]) - 1) < 1e-9
    assert sample["start_s"] == 0.0 and sample["end_s"] == pytest.approx(0.6)  # the recording's own time axis
    assert body["recording"]["duration_s"] == pytest.approx(0.6) and body["recording"]["prediction"] == \
        sample["prediction"] and len(body["heatmaps_png"]) == 1
    assert body["relevance_shape"] == [1, 1, 227, 227]
    np.testing.assert_allclose(np.array(body["relevance"], np.float32), e.relevance, rtol=1e-4, atol=1e-7)
    png = base64.b64decode(body["heatmaps_png"][0])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    import soundfile

    audible, rate = soundfile.read(io.BytesIO(base64.b64decode(body["audible_wav"])))
    assert rate == 8000 and len(audible) == pytest.approx(0.6 * 8000, abs=2) and np.abs(audible).max() > 0


def test_predict_raw_wav_body_without_relevance(client, models, wav_bytes):
    r = client.post("/v1/models/gender/predict", content=wav_bytes, headers={"content-type": "audio/wav"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "relevance" not in body and body["input"] == "audio"
    s = body["samples"][0]
    assert s["label"] in LABELS and len(s["logits"]) == 2 and "target" not in s


def test_explain_json_array_batch_and_targets(client, models):
    x = tiny_input(3)
    e = models["tiny"].explain(x, target=[0, 2, 1])
    r = client.post("/v1/models/tiny/explain", json={"input": x.tolist(), "target": [0, 2, 1]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["input"] == "array" and [s["target"] for s in body["samples"]] == [0, 2, 1]
    assert [s["label"] for s in body["samples"]] == [str(int(k)) for k in e.predictions]
    np.testing.assert_allclose(np.array(body["relevance"], np.float32), e.relevance, rtol=1e-4, atol=1e-7)
    # one sample without the batch axis, the bare-array form, the target in the query string
    r = client.post("/v1/models/tiny/explain", params={"target": "2"}, json=x[0].tolist())
    assert r.status_code == 200 and r.json()["relevance_shape"] == [1, 1, 7, 7]
    assert r.json()["samples"][0]["target"] == 2


def test_explain_npy_in_npy_out(client, models):
    x = tiny_input(2, seed=3)
    buffer = io.BytesIO()
    np.save(buffer, x)
    r = client.post("/v1/models/tiny/explain", params={"relevance": "npy", "target": "1"},
                    content=buffer.getvalue(), headers={"content-type": "application/x-npy"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-npy"
    relevance = np.load(io.BytesIO(r.content), allow_pickle=False)
    np.testing.assert_allclose(relevance, models["tiny"].explain(x, target=1).relevance, rtol=1e-5, atol=1e-7)
    summary = json.loads(r.headers["x-lrp-result"])
    assert [s["target"] for s in summary["samples"]] == [1, 1]


def test_target_by_label_and_other_composite(client, models, wav_bytes):
    r = client.post("/v1/models/gender/explain", params={"target": "male", "composite": "epsilon"},
                    content=wav_bytes, headers={"content-type": "audio/wav"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["composite"] == "epsilon" and body["samples"][0]["target_label"] == "male"
    import soundfile

    wave, sr = soundfile.read(io.BytesIO(wav_bytes), dtype="float32")
    x = SpectrogramSpec().segments(wave, sr)[0].features[None]
    expected = Explainer(models["gender"].source, composite="epsilon").explain(x, target=1)
    np.testing.assert_allclose(np.array(body["relevance"], np.float32), expected.relevance, rtol=1e-4, atol=1e-7)
    assert client.get("/v1/stats").json()["composites"]["gender"] == ["epsilon-plus", "epsilon"]


def test_long_recording_is_decided_from_its_speech_cropped_or_split(client, tmp_path):
    wave = np.concatenate([voice(1.0, 200, 8000, seed=4), np.zeros(4000, np.float32), voice(1.0, 120, 8000, 5)])
    data = write_wav(tmp_path / "long.wav", wave, 8000).read_bytes()
    r = client.post("/v1/models/gender/explain", params={"relevance": "none"}, content=data,
                    headers={"content-type": "audio/wav"})
    body = r.json()
    assert r.status_code == 200 and "decided from" in body["note"] and body["recording"]["segments"] == "speech"
    windows = body["recording"]["windows"]
    assert len(body["samples"]) == len(windows) >= 1 and all(w["end_s"] - w["start_s"] == 1.0 for w in windows)
    mean = np.mean([w["logits"] for w in windows], axis=0)
    assert body["recording"]["prediction"] == int(np.argmax(mean))
    assert {s["target"] for s in body["samples"]} == {body["recording"]["prediction"]}
    r = client.post("/v1/models/gender/explain", params={"relevance": "none", "segments": "crop"}, content=data,
                    headers={"content-type": "audio/wav"})
    body = r.json()
    assert r.status_code == 200 and len(body["samples"]) == 1
    assert "cropped to its loudest 1 s window" in body["note"]
    assert body["samples"][0]["end_s"] - body["samples"][0]["start_s"] == pytest.approx(1.0)
    r = client.post("/v1/models/gender/explain", params={"relevance": "none", "segments": "split"}, content=data,
                    headers={"content-type": "audio/wav"})
    body = r.json()
    assert r.status_code == 200 and len(body["samples"]) == 3 and "split into 3 windows" in body["note"]
    assert [s["start_s"] for s in body["samples"]] == [0.0, 1.0, 2.0]
    assert body["samples"][-1]["end_s"] == 2.5 and body["recording"]["prediction"] is None


def test_examples_viewer_page_and_openapi(url, client):
    listing = client.get("/v1/examples").json()["examples"]
    assert [e["name"] for e in listing] == ["female_test.wav", "male_test.wav"]
    r = client.get(listing[0]["url"])
    assert r.status_code == 200 and r.content[:4] == b"RIFF"
    assert_error(client.get("/v1/examples/..%2F..%2Fetc%2Fpasswd"), 404)
    assert_error(client.get("/v1/examples/nope.wav"), 404, "no example")
    page = httpx.get(f"{url}/")  # the page itself needs no token; its API calls do
    assert page.status_code == 200 and "lrp-onnx viewer" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(f"{url}/static/viewer.js").status_code == 200
    spec = httpx.get(f"{url}/openapi.json").json()
    explain = spec["paths"]["/v1/models/{name}/explain"]["post"]
    assert {"application/json", "application/x-npy", "audio/wav", "multipart/form-data"} <= set(
        explain["requestBody"]["content"])
    assert {"composite", "target", "relevance", "heatmap", "segments"} <= {p["name"] for p in explain["parameters"]}
    assert {"/healthz", "/v1/models", "/v1/models/{name}/predict", "/v1/examples"} <= set(spec["paths"])


# ------------------------------------------------------------------------------ token
def test_token_missing_wrong_and_right(url):
    r = httpx.get(f"{url}/v1/models")
    assert_error(r, 401, "missing bearer token")
    assert r.headers["www-authenticate"].startswith("Bearer")
    for value in (f"Bearer {TOKEN[:-1]}x", "Bearer short", f"Basic {TOKEN}", TOKEN, "Bearer"):
        assert_error(httpx.get(f"{url}/v1/models", headers={"Authorization": value}), 401, "invalid bearer token")
    # refused before the body is read
    r = httpx.post(f"{url}/v1/models/tiny/explain", json={"input": tiny_input().tolist()},
                   headers={"Authorization": "Bearer nope"})
    assert_error(r, 401)
    assert httpx.get(f"{url}/v1/models", headers={"authorization": f"bearer {TOKEN}"}).status_code == 200


# ------------------------------------------------------------------------------ bad input
NOT_AUDIO = np.random.default_rng(7).bytes(50_000)
BAD_REQUESTS = {
    "random bytes as WAV": (dict(content=NOT_AUDIO, headers={"content-type": "audio/wav"}), 400, "not a readable recording"),
    "random bytes uploaded": (dict(files={"file": ("x.wav", NOT_AUDIO, "audio/wav")}), 400, "not a readable recording"),
    "random octet-stream": (dict(content=NOT_AUDIO, headers={"content-type": "application/octet-stream"}), 400, "recording"),
    "empty WAV body": (dict(content=b"", headers={"content-type": "audio/wav"}), 400, "empty body"),
    "truncated WAV header": (dict(content=b"RIFF\x24\x00\x00\x00WAVEfmt ", headers={"content-type": "audio/wav"}), 400, "recording"),
    "wrong shape JSON": (dict(json={"input": [[1.0, 2.0], [3.0, 4.0]]}), 422, "the model expects (N, 1, 227, 227)"),
    "NaN in JSON": (dict(content=json.dumps({"input": np.where(np.arange(227 * 227) == 5, np.nan, 0.0).reshape(
        1, 227, 227).tolist()}).encode(), headers={"content-type": "application/json"}), 422, "NaN or Inf"),
    "ragged JSON": (dict(json={"input": [[1.0], [1.0, 2.0]]}), 422, "rectangular array of numbers"),
    "strings in JSON": (dict(json={"input": [["a", "b"]]}), 422, "array of numbers"),
    "nulls in JSON": (dict(json={"input": [None, 1.0]}), 422, "array of numbers"),
    "no input field": (dict(json={"target": 1}), 422, "input"),
    "unknown JSON field": (dict(json={"input": [1.0], "colour": "red"}), 422, "colour"),
    "invalid JSON": (dict(content=b'{"input": [1, 2', headers={"content-type": "application/json"}), 400, "not valid JSON"),
    "deeply nested JSON": (dict(content=b"[" * 200_000 + b"]" * 200_000, headers={"content-type": "application/json"}), 400, "JSON"),
    "unsupported type": (dict(content=b"hello", headers={"content-type": "text/plain"}), 415, "unsupported content type"),
    "multipart without file": (dict(files={"other": ("a.wav", b"123", "audio/wav")}), 422, "'file'"),
    "unknown option": (dict(params={"colour": "red"}, json={"input": [1.0]}), 422, "colour"),
    "bad option value": (dict(params={"relevance": "xml"}, json={"input": [1.0]}), 422, "relevance"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_a_4xx_and_the_server_goes_on(client, wav_bytes, case):
    kwargs, status, fragment = BAD_REQUESTS[case]
    assert_error(client.post("/v1/models/gender/explain", **kwargs), status, fragment)
    assert_alive(client, wav_bytes)


def test_bad_targets_composites_and_sizes(client, wav_bytes, tmp_path):
    post = lambda name, **kw: client.post(f"/v1/models/{name}/explain", **kw)  # noqa: E731
    audio = dict(content=wav_bytes, headers={"content-type": "audio/wav"})
    assert_error(post("gender", params={"composite": "magic"}, **audio), 422, "unknown composite 'magic'")
    assert_error(post("gender", params={"target": "5"}, **audio), 422, "out of range")
    assert_error(post("gender", params={"target": "robot"}, **audio), 422, "one of female, male")
    assert_error(post("tiny", json={"input": tiny_input(2).tolist(), "target": [0]}), 422, "one class per sample")
    assert_error(post("tiny", json={"input": tiny_input(9).tolist()}), 422, "at most 8 per request")
    assert_error(post("tiny", json={"input": tiny_input().tolist()}, params={"heatmap": "true", "relevance": "npy"}),
                 422, "heatmap=true")
    assert_error(post("tiny", **audio), 422, "no feature metadata")
    assert_error(post("nope", **audio), 404, "unknown model 'nope'; served: gender, tiny")
    inf = json.dumps({"input": tiny_input().tolist()}).replace("0.", "1e999", 1)
    assert_error(post("tiny", content=inf, headers={"content-type": "application/json"}), 422, "NaN or Inf")
    silent = write_wav(tmp_path / "silent.wav", np.zeros(8000, np.float32), 8000).read_bytes()
    assert_error(post("gender", content=silent, headers={"content-type": "audio/wav"}), 422, "silent")
    assert_alive(client, wav_bytes)


def test_bad_npy_bodies(client, wav_bytes):
    def npy(array, **kw):
        buffer = io.BytesIO()
        np.save(buffer, array, **kw)
        return buffer.getvalue()

    post = lambda data: client.post("/v1/models/tiny/explain", content=data,  # noqa: E731
                                    headers={"content-type": "application/x-npy"})
    assert_error(post(npy(np.array([{"a": 1}], dtype=object), allow_pickle=True)), 400, "object arrays")
    header_only = npy(np.zeros((10_000, 1, 7, 7), np.float32))[:200]  # header announces 1.9 MB, body has 72 bytes
    assert_error(post(header_only), 400, "fewer bytes")
    assert_error(post(npy(np.zeros((1, 1, 7, 7), np.int32))), 422, "integer dtype")
    assert_error(post(b"\x93NUMPY garbage"), 400, ".npy")
    assert_alive(client, wav_bytes)


def test_hour_long_wav(client, url, wav_bytes, tmp_path):
    """An hour at 8 kHz/16 bit (57.6 MB) is refused by size (413) before it is read; an hour that
    fits the body limit (400 Hz, 8 bit: 1.4 MB) is refused by duration (422) before it is decoded."""
    header = _wav_header(seconds=3600, rate=8000, bits=16)
    status, headers, sent = _raw_post(url, "/v1/models/gender/explain", header, len(header) + 3600 * 8000 * 2,
                                      content_type="audio/wav", send_bytes=256 * 1024)
    assert status == 413 and headers.get("connection") == "close" and sent <= 256 * 1024 + len(header)
    hour = np.tile(voice(1.0, 100, 400, seed=6), 3600)
    data = write_wav(tmp_path / "hour.wav", hour, 400, subtype="PCM_U8").read_bytes()
    assert len(data) < MAX_BODY_MB * 2**20
    r = client.post("/v1/models/gender/explain", content=data, headers={"content-type": "audio/wav"})
    assert_error(r, 422, "recording is 3600.0 s long; this server accepts at most 30 s")
    assert_alive(client, wav_bytes)


# ------------------------------------------------------------------------------ abuse at the HTTP level
def _wav_header(seconds, rate, bits):
    import struct

    data = seconds * rate * bits // 8
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate,
                                                                               rate * bits // 8, bits // 8, bits)
            + b"data" + struct.pack("<I", data))


def _read_response(sock, timeout=10.0):
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0] else 0
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(rest) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest


def _raw_post(url, path, prefix: bytes, length: int, content_type: str, send_bytes: int):
    """POST announcing ``length`` bytes; send ``prefix`` then zeros up to ``send_bytes`` while the
    server has not answered; return (status, headers, bytes sent)."""
    host, port = url.rsplit("/", 1)[-1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
                     f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n".encode())
        sock.sendall(prefix)
        sent = len(prefix)
        block = b"\0" * 65536
        while sent < send_bytes and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(block)
            except OSError:
                break
            sent += len(block)
        status, headers, _ = _read_response(sock)
        return status, headers, sent


def test_2gb_body_gets_413_without_being_read(url, client, wav_bytes):
    status, headers, sent = _raw_post(url, "/v1/models/tiny/explain", b"", 2 * 2**30,
                                      content_type="application/x-npy", send_bytes=1024 * 1024)
    assert status == 413 and headers["connection"] == "close"
    assert sent <= 1024 * 1024  # answered although at most 1 MB of the announced 2 GB arrived
    assert_alive(client, wav_bytes)


def test_chunked_body_over_the_limit_is_cut_off(url, client, wav_bytes):
    host, port = url.rsplit("/", 1)[-1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /v1/models/tiny/explain HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
                     "Content-Type: application/x-npy\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"%x\r\n" % 65536 + b"\0" * 65536 + b"\r\n"
        sent = 0
        while sent < 64 * 2**20 and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(chunk)
            except OSError:
                break
            sent += 65536
        status, headers, _ = _read_response(sock)
    assert status == 413 and headers["connection"] == "close"
    assert sent < 4 * MAX_BODY_MB * 2**20  # the server stopped it shortly after the limit
    assert_alive(client, wav_bytes)


def test_slow_client_body_gets_408(url, client, wav_bytes):
    host, port = url.rsplit("/", 1)[-1].split(":")
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /v1/models/tiny/explain HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"input\": [".encode())
        status, headers, rest = _read_response(sock)
    assert status == 408 and headers["connection"] == "close" and b"not received within 1 s" in rest
    assert time.monotonic() - start < 5
    assert_alive(client, wav_bytes)


def test_slow_client_headers_are_dropped(url, client, wav_bytes):
    host, port = url.rsplit("/", 1)[-1].split(":")
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        assert sock.recv(100) == b""  # closed by the server
    assert time.monotonic() - start < 5
    assert_alive(client, wav_bytes)


def test_memory_stays_bounded_under_bad_requests(client, url, wav_bytes):
    def rss():
        return client.get("/v1/stats").json()["rss_bytes"]

    for _ in range(3):
        client.post("/v1/models/gender/explain", content=NOT_AUDIO, headers={"content-type": "audio/wav"})
    before = rss()
    big = np.random.default_rng(1).bytes(MAX_BODY_MB * 2**20 - 1000)
    for i in range(15):
        assert client.post("/v1/models/gender/explain", content=big, headers={"content-type": "audio/wav"}
                           ).status_code == 400
        assert _raw_post(url, "/v1/models/tiny/explain", b"", 2**31, "application/x-npy", 65536)[0] == 413
    assert rss() - before < 64 * 2**20
    assert_alive(client, wav_bytes)


# ------------------------------------------------------------------------------ queue and batching
def _gate(app):
    """Occupy the only batch worker until the returned event is set."""
    gate, running = threading.Event(), threading.Event()

    def block(x):
        running.set()
        gate.wait(20)
        return (x,)

    app.state.batcher.submit(("gate",), block, np.zeros(1))
    assert running.wait(5)
    return gate


def test_concurrent_requests_are_micro_batched(app, client, models):
    x = tiny_input(4, seed=9)
    gate = _gate(app)
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(client.post, "/v1/models/tiny/explain", json={"input": x[i].tolist()})
                       for i in range(4)]
            deadline = time.monotonic() + 10
            while client.get("/v1/stats").json()["queued"] < 4 and time.monotonic() < deadline:
                time.sleep(0.02)
            gate.set()
            bodies = [f.result().json() for f in futures]
    finally:
        gate.set()
    expected = models["tiny"].explain(x)
    for i, body in enumerate(bodies):
        np.testing.assert_allclose(np.array(body["relevance"], np.float32), expected.relevance[i:i + 1],
                                   rtol=1e-4, atol=1e-7)
    assert client.get("/v1/stats").json()["largest_batch"] >= 4


@pytest.fixture(scope="module")
def small_queue(models):
    app = create_app({"tiny": models["tiny"]}, max_batch=4, queue_size=1, timeout_s=1.0)
    with running_server(app) as base:
        yield app, base


def test_full_queue_gets_503_with_retry_after(small_queue):
    app, base = small_queue
    body = {"input": tiny_input().tolist()}
    gate = _gate(app)
    try:
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(httpx.post, f"{base}/v1/models/tiny/explain", json=body, timeout=10)
            deadline = time.monotonic() + 5
            while app.state.batcher.stats()["queued"] < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            r = httpx.post(f"{base}/v1/models/tiny/explain", json=body)
            assert_error(r, 503, "server busy")
            assert int(r.headers["retry-after"]) >= 1
            timed_out = waiting.result()  # queued behind the gate longer than timeout_s
            assert_error(timed_out, 503, "no answer within 1 s")
            assert "retry-after" in timed_out.headers
            # the timed-out request gave its place back: the next one queues (and times out) instead of 503-busy
            assert_error(httpx.post(f"{base}/v1/models/tiny/explain", json=body), 503, "no answer within 1 s")
    finally:
        gate.set()
    r = httpx.post(f"{base}/v1/models/tiny/explain", json=body)
    assert r.status_code == 200 and app.state.batcher.stats()["rejected"] >= 1


def test_requests_in_flight_are_bounded(models):
    app = create_app({"tiny": models["tiny"]}, max_inflight=1, read_timeout_s=5.0)
    with running_server(app) as base:
        host, port = base.rsplit("/", 1)[-1].split(":")
        with socket.create_connection((host, int(port)), timeout=10) as slow:
            slow.sendall(b"POST /v1/models/tiny/explain HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n[")  # holds the only slot while its body trickles
            deadline = time.monotonic() + 5
            while (r := httpx.get(f"{base}/v1/models")).status_code == 200 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert_error(r, 503, "requests in flight")
            assert r.headers["retry-after"] == "1"
            assert httpx.get(f"{base}/healthz").status_code == 200  # liveness is not counted
        deadline = time.monotonic() + 5
        while (r := httpx.get(f"{base}/v1/models")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.status_code == 200


# ------------------------------------------------------------------------------ CLI and embedding
def test_serve_command_runs_a_server(tmp_path, examples):
    import onnx

    from _server_fixtures import free_socket

    model = tmp_path / "gender.onnx"
    onnx.save(spectrogram_model(), str(model))
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen([sys.executable, "-m", "lrp_onnx.cli", "serve", str(model), "--port", str(port),
                             "--max-batch", "4", "--examples", str(examples)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "LRP_ONNX_TOKEN": "env-token"})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else ""
            time.sleep(0.2)
        headers = {"Authorization": "Bearer env-token"}
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers=headers).json()["models"]
        assert [m["name"] for m in models] == ["gender"]
        wav = (examples / "female_test.wav").read_bytes()
        r = httpx.post(f"http://127.0.0.1:{port}/v1/models/gender/explain", content=wav, headers={
            **headers, "content-type": "audio/wav"}, params={"relevance": "none"}, timeout=30)
        assert r.status_code == 200 and r.json()["samples"][0]["label"] in LABELS
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert f"serving gender on http://127.0.0.1:{port}/" in out


def test_serve_command_errors(cli, tmp_path):
    r = cli("serve", tmp_path / "missing.onnx")
    assert r.rc == 2 and "no such model file" in r.err
    model = tmp_path / "a.onnx"
    model.write_bytes(b"")
    r = cli("serve", model, f"a={model}")
    assert r.rc == 2 and "two models named 'a'" in r.err


def test_embed_service_example(tmp_path):
    """examples/embed_service.py: an existing stdlib service with an Explainer inside."""
    import importlib.util
    from pathlib import Path

    import onnx

    path = Path(__file__).parents[1] / "examples" / "embed_service.py"
    spec = importlib.util.spec_from_file_location("embed_service", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = tmp_path / "gender.onnx"
    onnx.save(spectrogram_model(), str(model))
    service = module.make_service(str(model), port=0, threads=1)
    thread = threading.Thread(target=service.serve_forever, daemon=True)
    thread.start()
    try:
        port = service.server_address[1]
        x = np.random.default_rng(0).uniform(-80, 0, (2, 1, 227, 227)).astype(np.float32)
        r = httpx.post(f"http://127.0.0.1:{port}/classify", json={"spectrograms": x.tolist(), "explain": True},
                       timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        e = Explainer(str(model), composite="epsilon-plus").explain(x)
        assert body["labels"] == [LABELS[k] for k in e.predictions]
        np.testing.assert_allclose(np.array(body["relevance"], np.float32), e.relevance, rtol=1e-4, atol=1e-6)
        r = httpx.post(f"http://127.0.0.1:{port}/classify", json={"spectrograms": x[:1].tolist()}, timeout=30)
        assert r.status_code == 200 and "relevance" not in r.json()
        assert httpx.post(f"http://127.0.0.1:{port}/classify", json={"spectrograms": [1, 2]}).status_code == 400
    finally:
        service.shutdown()
        service.server_close()


# ------------------------------------------------------------------------------ the batcher itself
def test_batcher_groups_by_key_within_max_batch_and_isolates_failures():
    from lrp_onnx.runtime.batching import MicroBatcher, Overloaded

    batcher = MicroBatcher(max_batch=4, queue_size=8, wait_s=0.0)
    calls = []
    gate = threading.Event()

    def double(x):
        calls.append(("double", len(x)))
        if (x < 0).any():
            raise ValueError("negative input")
        return (2 * x,)

    def blocked(x):
        gate.wait(10)
        return (x,)

    try:
        first = batcher.submit("gate", blocked, np.zeros(1))
        time.sleep(0.05)  # the worker is now inside blocked()
        jobs = [batcher.submit("a", double, np.full(n, float(n))) for n in (1, 2, 1, 3)]
        other = batcher.submit("b", lambda x: (x + 1,), np.zeros(2))
        bad = batcher.submit("a", double, np.array([-1.0]))
        cancelled = batcher.submit("a", double, np.ones(1))
        assert cancelled.cancel()
        with pytest.raises(Overloaded) as info:
            for _ in range(8):
                batcher.submit("c", double, np.ones(1))
        assert info.value.retry_after >= 1
        gate.set()
        assert first.result(5)[0].tolist() == [0.0]
        assert [j.result(5)[0].tolist() for j in jobs] == [[2.0], [4.0, 4.0], [2.0], [6.0, 6.0, 6.0]]
        assert other.result(5)[0].tolist() == [1.0, 1.0]
        with pytest.raises(ValueError, match="negative"):
            bad.result(5)
        assert ("double", 4) in calls  # 1 + 2 + 1 samples ran as one batch, never more than max_batch
        assert max(n for _, n in calls) <= 4
        stats = batcher.stats()
        assert stats["rejected"] >= 1 and stats["failed"] == 1 and stats["largest_batch"] == 4
    finally:
        gate.set()
        batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("a", double, np.ones(1))
