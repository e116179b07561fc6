"""Hostile input to the HTTP service (issue 10, items 9, 11 and 12), over real HTTP on
loopback: crafted labels in a model's metadata, huge or odd ``target`` values, error
messages that would show object addresses, an empty token; and the offline API docs.
The contract: a 4xx with a one-line JSON error, and the service keeps serving."""
from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
if importlib.util.find_spec("python_multipart") is None and importlib.util.find_spec("multipart") is None:
    pytest.skip("python-multipart is not installed", allow_module_level=True)
httpx = pytest.importorskip("httpx")

from _server_fixtures import (
    free_socket,
    running_server,
    spectrogram_model,
    voice,
    write_wav,
)
from conftest import tiny_cnn_model
from lrp_onnx.lrp_graph.errors import ConfigError, ModelError
from lrp_onnx.runtime import Explainer
from lrp_onnx.service.app import create_app

TOKEN = "hostile-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: labels that matplotlib would parse as math text (nested too deep: RecursionError; an
#: unknown macro: a multi-line ParseFatalException), with characters no font draws (a lone
#: surrogate: TypeError; NUL, a right-to-left override)
CRAFTED_LABELS = ["$" + r"\frac{" * 400 + "x" + "}" * 400 + "$",
                  r"$\undefinedmacro{$ \n $x^{2}$" + " \ud800 \x00 \u202e"]
OBJECT_REPR = re.compile(r"<[^>]* at 0x[0-9a-fA-F]+>|0x[0-9a-fA-F]{6,}")


def with_labels(model: onnx.ModelProto, labels: list[str]) -> onnx.ModelProto:
    for prop in model.metadata_props:
        if prop.key == "lrp_onnx.labels":
            prop.value = json.dumps(labels)
    return model


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> bytes:
    return write_wav(tmp_path_factory.mktemp("hostile") / "voice.wav", voice(0.7, 200, 16000), 16000).read_bytes()


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    """One model with crafted labels and one plain model, both given as paths (so the service
    reads their metadata and default composite itself), behind a token."""
    folder = tmp_path_factory.mktemp("models")
    crafted, plain = folder / "crafted.onnx", folder / "plain.onnx"
    onnx.save(with_labels(spectrogram_model(), CRAFTED_LABELS), str(crafted))
    onnx.save(spectrogram_model(), str(plain))
    app = create_app({"crafted": str(crafted), "plain": str(plain)}, token=TOKEN, max_batch=4, timeout_s=60)
    with running_server(app) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as c:
        yield c


def assert_json_error(response, status: int, fragment: str = "") -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    message = body["error"]
    assert body["status"] == status and isinstance(message, str) and "\n" not in message
    assert not OBJECT_REPR.search(message), message
    assert fragment.lower() in message.lower(), message
    return message


def assert_alive(client, wav: bytes):
    r = client.post("/v1/models/plain/explain", params={"relevance": "none"}, content=wav,
                    headers={"content-type": "audio/wav"})
    assert r.status_code == 200, r.text
    assert r.json()["samples"][0]["label"] in ("female", "male")


# ------------------------------------------------------------------------------ item 9: labels
@pytest.mark.parametrize("target", [0, 1])
def test_crafted_labels_are_drawn_literally(client, wav, target):
    """Heatmap titles name the explained class by its label: a label that is math text to
    matplotlib (deeply nested: RecursionError -> 500; unknown macro: a multi-line error) is
    drawn as the characters it is."""
    r = client.post("/v1/models/crafted/explain", content=wav, headers={"content-type": "audio/wav"},
                    params={"heatmap": "true", "relevance": "none", "target": str(target)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["samples"][0]["target_label"] == CRAFTED_LABELS[target]
    png = base64.b64decode(body["heatmaps_png"][0])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert client.get("/v1/models/crafted").json()["labels"] == CRAFTED_LABELS
    assert_alive(client, wav)


def test_heatmap_titles_of_crafted_labels_render():
    """The same, one level down: the titles made of each crafted label are drawable text,
    and ``render_heatmap_png`` draws them."""
    from lrp_onnx.service.rendering import literal_title, render_heatmap_png
    from lrp_onnx.service.served import ServedModel

    served = ServedModel("m", Explainer(with_labels(spectrogram_model(), CRAFTED_LABELS)))
    relevance = np.random.default_rng(0).standard_normal((1, 8, 8)).astype(np.float32)
    for target in (0, 1):
        title = literal_title(served, target)
        assert title.isprintable() and len(title) < 100
        assert render_heatmap_png(relevance, relevance, title=title)[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------ item 11: target, reprs
HUGE = "9" * 5000


@pytest.mark.parametrize("target", [HUGE, "-" + HUGE, "9" * 40, "\u00b2", "\u0663", " 1e999 "],
                         ids=["5000 digits", "-5000 digits", "40 digits", "superscript two", "arabic three", "1e999"])
def test_odd_target_in_the_query_is_a_422(client, wav, target):
    r = client.post("/v1/models/plain/explain", params={"target": target}, content=wav,
                    headers={"content-type": "audio/wav"})
    assert_json_error(r, 422, "target")
    assert len(r.content) < 1000
    assert_alive(client, wav)


def test_odd_target_in_a_json_body_is_a_4xx(client, wav):
    x = np.zeros((1, 1, 227, 227), np.float32).tolist()
    for target in (int("7" * 4000), -int("7" * 30), [int("7" * 30)], HUGE):
        r = client.post("/v1/models/plain/explain", json={"input": x, "target": target, "relevance": "none"})
        assert_json_error(r, 422, "target")
    body = json.dumps({"input": x, "target": 0}).replace('"target": 0', f'"target": {HUGE}').encode()
    r = client.post("/v1/models/plain/explain", content=body, headers={"content-type": "application/json"})
    assert_json_error(r, 400, "JSON")  # more digits than Python parses: the body is refused as a whole
    assert_alive(client, wav)


def test_odd_target_in_a_form_field_is_a_4xx(client, wav):
    r = client.post("/v1/models/plain/explain", data={"target": "9" * 4000, "relevance": "none"},
                    files={"file": ("voice.wav", wav, "audio/wav")})
    assert_json_error(r, 422, "target")
    assert_alive(client, wav)


@pytest.mark.parametrize("how", ["body", "upload", "octet-stream"])
def test_error_messages_show_no_object_addresses(client, wav, how):
    garbage = b"not a recording at all " * 40
    if how == "body":
        r = client.post("/v1/models/plain/explain", content=garbage, headers={"content-type": "audio/wav"})
    elif how == "upload":
        r = client.post("/v1/models/plain/explain", files={"file": ("x.wav", garbage, "audio/wav")})
    else:
        r = client.post("/v1/models/plain/predict", content=garbage,
                        headers={"content-type": "application/octet-stream"})
    message = assert_json_error(r, 400, "not a readable recording")
    assert "BytesIO" not in message and "<" not in message
    assert_alive(client, wav)


def test_clean_message_takes_out_reprs_and_long_text():
    from lrp_onnx.service.errors import MAX_MESSAGE_CHARS, clean_message

    text = clean_message(f"Error opening {io.BytesIO()!r}: bad\nsecond line {object()!r} {'x' * 5000}")
    assert "0x" not in text and "\n" not in text and "BytesIO" not in text
    assert len(text) == MAX_MESSAGE_CHARS and text.endswith("...")


# ------------------------------------------------------------------------------ item 12: empty token
@pytest.mark.parametrize("token", ["", "   ", "\t"])
def test_create_app_refuses_an_empty_token(token):
    with pytest.raises(ConfigError, match="token is empty"):
        create_app({"m": Explainer(tiny_cnn_model())}, token=token)


def _serve(tmp_path, *args, env_token=None):
    model = tmp_path / "gender.onnx"
    onnx.save(spectrogram_model(), str(model))
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {k: v for k, v in os.environ.items() if k != "LRP_ONNX_TOKEN"}
    if env_token is not None:
        env["LRP_ONNX_TOKEN"] = env_token
    try:  # a server that starts would run until killed: that is the failure
        return subprocess.run([sys.executable, "-m", "lrp_onnx.cli", "serve", str(model), "--port", str(port),
                               *args], check=False, capture_output=True, text=True, env=env, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve {' '.join(args)} started serving instead of refusing")


@pytest.mark.parametrize("args, env_token, fragment", [
    (["--token", ""], None, "--token is empty"),
    (["--token", "  "], None, "--token is empty"),
    (["--token", "has space"], None, "--token may only hold visible ASCII"),
    ([], "", "LRP_ONNX_TOKEN is empty"),
])
def test_serve_refuses_an_empty_token(tmp_path, args, env_token, fragment):
    result = _serve(tmp_path, *args, env_token=env_token)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [f"lrp-onnx: error: {lines[0].removeprefix('lrp-onnx: error: ')}"]
    assert fragment in lines[0] and "Traceback" not in result.stderr


# ------------------------------------------------------------------------------ offline API docs
def test_api_schema_is_served_and_no_page_needs_the_internet(url):
    """/docs and /redoc (whose scripts come from a CDN, blank offline) are gone; the schema is
    at /openapi.json, and the viewer's page and files name no other origin."""
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert_json_error(httpx.get(url + path), 404)
    spec = httpx.get(url + "/openapi.json")
    assert spec.status_code == 200 and spec.json()["info"]["title"] == "lrp-onnx"
    for path in ("/", "/static/viewer.js", "/static/viewer.css"):
        r = httpx.get(url + path)
        assert r.status_code == 200
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", r.text, re.IGNORECASE), path


# ------------------------------------------------------------------------------ model metadata
def _with_composite(model: onnx.ModelProto, composite: str | None) -> onnx.ModelProto:
    keep = [p for p in model.metadata_props if p.key != "lrp_onnx.composite"]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    if composite is not None:
        model.metadata_props.add(key="lrp_onnx.composite", value=composite)
    return model


def test_served_paths_use_the_models_default_composite(tmp_path):
    """A model given as a path is explained with its recommended composite, else epsilon;
    one whose metadata names a file instead of a preset is refused at start-up."""
    paths = {}
    for name, composite in [("recommended", "epsilon-plus"), ("none", None)]:
        paths[name] = tmp_path / f"{name}.onnx"
        onnx.save(_with_composite(spectrogram_model(), composite), str(paths[name]))
    app = create_app({k: str(v) for k, v in paths.items()})
    assert {n: m.default_composite for n, m in app.state.served.items()} == {
        "recommended": "epsilon-plus", "none": "epsilon"}
    onnx.save(_with_composite(spectrogram_model(), "/dev/zero"), str(tmp_path / "file.onnx"))
    with pytest.raises(ModelError, match="not a preset"):
        create_app({"file": str(tmp_path / "file.onnx")})
