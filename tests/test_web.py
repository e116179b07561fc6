"""The in-browser explainer site (lrp-onnx web) in Debian's headless Chromium, driven by Playwright.

The site is built for the shipped model and served by a real HTTP server on loopback. For each
example recording, the page's JavaScript features must equal the Python features (1e-3 dB), its
relevance must equal Python onnxruntime's on the same features (1e-5 relative L2 on WebAssembly,
1e-4 on WebGPU with Chromium's software adapter), and its label must be the CLI's. Every request
the browser makes is recorded: none may leave the origin, and the page must work offline after
its first load. Needs onnxruntime-web in web/node_modules: installed here with ``npm ci`` from the
lockfile when npm is available.
"""
from __future__ import annotations

import base64
import functools
import glob
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

playwright_api = pytest.importorskip("playwright.sync_api")

import lrp_onnx
from lrp_onnx.audio.io import load_audio
from lrp_onnx.runtime import Explainer
from lrp_onnx.runtime.recordings import decide

PACKAGE = Path(lrp_onnx.__file__).resolve().parent
WEB_DIR = PACKAGE / "web"
MODEL = PACKAGE / "models" / "gender_alexnet.onnx"
EXAMPLES = sorted(glob.glob(str(PACKAGE / "models" / "examples" / "*.wav")))
#: decoded by Web Audio (the WAV files are read by the page itself); 4 s, so decided from their speech windows
FLAC_EXAMPLES = sorted(glob.glob(str(PACKAGE / "models" / "examples" / "*.flac")))
#: WebAssembly relevance of every example within 1e-5 relative L2 of Python's (measured 2e-7, and 3e-7 on WebGPU;
#: the page's features equal Python's bit for bit). Not a bound for any input: where two values of a max-pool
#: window lie within float32 rounding of each other, WebAssembly and native onnxruntime can pick different winners
#: and the relevance then differs by ~1e-2 (1 of 48 copies of the examples with 1e-3 dB of noise; native
#: onnxruntime's own relevance moves as much when one feature of such an input changes by 3e-4 dB)
RELEVANCE = 1e-5
CHROMIUM = os.environ.get("LRP_ONNX_CHROMIUM", "/usr/bin/chromium")
CLOSED_NETWORK = ["--headless", "--no-sandbox", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]
WASM_FLAGS = [*CLOSED_NETWORK, "--disable-gpu"]
WEBGPU_FLAGS = [*CLOSED_NETWORK, "--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader",
                "--enable-features=Vulkan"]

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}")

# window.lrpOnnx.explain on a base64 recording; typed arrays come back as base64 bytes
EXPLAIN_JS = """async (b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const r = await window.lrpOnnx.explain(bytes.buffer);
  const enc = (a) => {
    const u = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    let s = "";
    for (let i = 0; i < u.length; i += 8192) s += String.fromCharCode(...u.subarray(i, i + 8192));
    return btoa(s);
  };
  return {label: r.label, logits: Array.from(r.logits), targets: Array.from(r.targets, Number), shape: r.shape,
          features: enc(r.features), relevance: enc(r.relevance), backend: r.backend,
          windows: r.windows.map((w) => [w.startS, w.endS]), windowLogits: Array.from(r.windowLogits),
          types: [r.logits.constructor.name, r.targets.constructor.name, r.relevance.constructor.name,
                  r.features.constructor.name]};
}"""


@pytest.fixture(scope="module")
def onnxruntime_web():
    """web/node_modules/onnxruntime-web, installed from the lockfile if missing."""
    if not (WEB_DIR / "node_modules" / "onnxruntime-web" / "package.json").is_file():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("onnxruntime-web is not installed and there is no npm to install it (npm ci in web/)")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=WEB_DIR, check=True, timeout=600,
                       capture_output=True)
    return WEB_DIR / "node_modules" / "onnxruntime-web"


@pytest.fixture(scope="module")
def site(onnxruntime_web, tmp_path_factory):
    from lrp_onnx.web.site import build_site

    folder = tmp_path_factory.mktemp("web") / "site"
    build_site(MODEL, folder)
    return folder


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def handle(self):
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):  # the browser dropped a download it no longer needs
            pass


@pytest.fixture(scope="module")
def served(site):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=site))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def python_side():
    explainer = Explainer(MODEL, cache=False)  # this compiler's explainer, as the site's
    spec = explainer.metadata.feature_spec()
    return explainer, spec


def _cli_label(cli, wav: str) -> str:
    result = cli("explain", MODEL, wav, "--json")
    assert result.rc == 0, result.err
    return json.loads(result.out.splitlines()[0])["label"]


def _explain_in_page(page, wav: str) -> dict:
    r = page.evaluate(EXPLAIN_JS, base64.b64encode(Path(wav).read_bytes()).decode())
    r["features"] = np.frombuffer(base64.b64decode(r["features"]), np.float32)
    r["relevance"] = np.frombuffer(base64.b64decode(r["relevance"]), np.float32)
    return r


def _check_against_python(r: dict, wav: str, python_side, tolerance: float) -> None:
    """The page's decision against ``lrp_onnx.runtime.recordings.decide`` (the CLI's): the same windows,
    features within 1e-3 dB, the same logits, and the relevance of the same class within ``tolerance``."""
    explainer, spec = python_side
    wave, rate = load_audio(wav)
    decision = decide(explainer, wave, rate)
    features = np.stack([s.features for s in decision.segments])
    assert r["windows"] == [[s.start_s, s.end_s] for s in decision.segments]
    assert r["shape"] == [len(decision.segments), *spec.shape]
    assert r["features"].shape == (features.size,)
    assert np.abs(r["features"] - features.ravel()).max() <= 1e-3  # dB
    assert r["targets"] == [decision.target] * len(decision.segments)
    e = explainer.explain(r["features"].reshape(features.shape), target=np.full(len(features), decision.target))
    want = e.relevance.ravel()
    assert np.linalg.norm(r["relevance"] - want) / np.linalg.norm(want) <= tolerance
    assert np.allclose(r["windowLogits"], e.logits.ravel(), rtol=1e-4, atol=1e-4)
    assert np.allclose(r["logits"], e.logits.mean(axis=0), rtol=1e-4, atol=1e-4)
    assert r["types"] == ["Float32Array", "BigInt64Array", "Float32Array", "Float32Array"]


def _record_requests(context) -> list[str]:
    requests: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    return requests


def _assert_same_origin(requests: list[str], url: str) -> None:
    origin = urlsplit(url)[:2]
    assert [u for u in requests if urlsplit(u)[:2] != origin and not u.startswith(("blob:", "data:"))] == []
    paths = {urlsplit(u).path for u in requests}
    assert {"/explainer.onnx", "/ort/ort-wasm-simd-threaded.asyncify.wasm", "/site.json"} <= paths


def test_wasm_page_explains_like_python_and_works_offline(served, python_side, cli):
    labels = {wav: _cli_label(cli, wav) for wav in EXAMPLES}
    assert len(labels) >= 2
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=WASM_FLAGS)
        try:
            context = browser.new_context()
            requests = _record_requests(context)
            page = context.new_page()
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(served + "/?backend=wasm")
            page.evaluate("window.lrpOnnx.ready")
            assert page.evaluate("window.lrpOnnx.backend") == "wasm"
            for wav in EXAMPLES:
                r = _explain_in_page(page, wav)
                _check_against_python(r, wav, python_side, RELEVANCE)
                assert r["label"] == labels[wav], wav
            for flac in FLAC_EXAMPLES:
                r = _explain_in_page(page, flac)
                _check_against_python(r, flac, python_side, RELEVANCE)
                assert r["label"] == _cli_label(cli, flac), flac
            # the page itself: pick a file, see the prediction and the heatmap
            page.set_input_files("#file", EXAMPLES[0])
            playwright_api.expect(page.locator("#status")).to_contain_text("Explained", timeout=60_000)
            assert page.text_content("#prediction") == labels[EXAMPLES[0]]
            assert page.is_visible("#heatmap")
            assert page.eval_on_selector("#audible", "a => a.src").startswith("blob:")  # the audible heatmap
            # offline after the first load: the service worker serves every file
            page.evaluate("navigator.serviceWorker.ready.then(() => true)")
            context.set_offline(True)
            page.reload()
            page.evaluate("window.lrpOnnx.ready")
            r = _explain_in_page(page, EXAMPLES[-1])
            assert r["label"] == labels[EXAMPLES[-1]]
            assert errors == []
        finally:
            browser.close()
    _assert_same_origin(requests, served)


TIMELINE_JS = """async (b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const r = await window.lrpOnnx.explain(bytes.buffer);
  const { audibleTimeline, timeline } = await import("./timeline.js");
  const t = timeline(window.lrpOnnx.config.features, r);
  return {rows: t.rows, cols: t.cols, times: Array.from(t.times), features: Array.from(t.features),
          relevance: Array.from(t.relevance), windows: r.windows.length,
          audible: Array.from(audibleTimeline(window.lrpOnnx.config.features, r))};
}"""


def test_page_draws_the_decision_over_the_whole_recording(served, python_side, tmp_path):
    """The heatmap's data (timeline.js) equals RecordingDecision.timeline: speech windows side by side from 0 s,
    a silent second drawn at the floor with no relevance, the last partial second cut at the recording's end;
    the audible heatmap equals runtime.audible.relevant_audio's (what `explain --audio` writes)."""
    import io

    import soundfile as sf

    explainer, spec = python_side
    wave, rate = load_audio(FLAC_EXAMPLES[0])
    wave = np.concatenate([wave, np.zeros(int(1.3 * rate), np.float32)])  # 4 s of speech, 1.3 s of silence
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format="WAV", subtype="FLOAT")
    decision = decide(explainer, wave, rate)
    want = decision.timeline()
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=WASM_FLAGS)
        try:
            page = browser.new_context().new_page()
            page.goto(served + "/?backend=wasm")
            page.evaluate("window.lrpOnnx.ready")
            t = page.evaluate(TIMELINE_JS, base64.b64encode(buffer.getvalue()).decode())
        finally:
            browser.close()
    assert (t["rows"], t["cols"]) == want.features.shape and t["windows"] == len(decision.segments) >= 2
    assert np.allclose(t["times"], want.times, atol=1e-9) and want.times[0] >= 0 and want.times[-1] <= 5.3
    features = np.asarray(t["features"], np.float32).reshape(want.features.shape)
    relevance = np.asarray(t["relevance"], np.float32).reshape(want.relevance.shape)
    assert np.abs(features - want.features).max() <= 1e-3
    assert np.linalg.norm(relevance - want.relevance) / np.linalg.norm(want.relevance) <= RELEVANCE
    silent = want.times >= 4.0
    assert silent.any() and np.all(relevance[:, silent] == 0) and np.all(want.relevance[:, silent] == 0)
    from lrp_onnx.cli.explain import Recording
    from lrp_onnx.runtime.audible import relevant_audio

    audio, _ = relevant_audio(Recording("r.wav", wave, rate, spec, decision.segments), decision.relevance)
    page_audio = np.asarray(t["audible"], np.float32)
    assert page_audio.shape == audio.shape and np.abs(audio).max() > 0
    assert np.linalg.norm(page_audio - audio) / np.linalg.norm(audio) <= 1e-3


def test_webgpu_page_explains_like_python(served, python_side, cli):
    """WebGPU with Chromium's software adapter (SwiftShader), every example recording."""
    recordings = EXAMPLES + FLAC_EXAMPLES
    labels = {wav: _cli_label(cli, wav) for wav in recordings}
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=WEBGPU_FLAGS)
        try:
            context = browser.new_context()
            requests = _record_requests(context)
            page = context.new_page()
            page.goto(served + "/?backend=webgpu")
            if not page.evaluate("async () => Boolean(navigator.gpu && await navigator.gpu.requestAdapter())"):
                pytest.skip("this Chromium offers no WebGPU adapter (SwiftShader)")
            page.evaluate("window.lrpOnnx.ready")
            assert page.evaluate("window.lrpOnnx.backend") == "webgpu"
            for wav in recordings:
                r = _explain_in_page(page, wav)
                _check_against_python(r, wav, python_side, 1e-4)
                assert r["label"] == labels[wav], wav
        finally:
            browser.close()
    _assert_same_origin(requests, served)


def test_web_command_writes_a_site_and_refuses_bad_destinations(onnxruntime_web, tmp_path, cli):
    out = tmp_path / "site"
    result = cli("web", MODEL, "-o", out, "--composite", "epsilon")
    assert result.rc == 0, result.err
    config = json.loads((out / "site.json").read_text())
    assert config["composite"] == "epsilon" and config["labels"] == ["male", "female"]
    assert config["probabilities"] == "softmax"  # read as the Python runtime reads them (runtime.scores)
    assert all((out / name).is_file() for name in config["files"])
    assert cli("web", MODEL, "-o", out).rc == 0  # a site built before is replaced
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"x")
    result = cli("web", MODEL, "-o", foreign)
    assert result.rc == 2 and result.err.startswith("lrp-onnx: error:") and "not empty" in result.err
    assert sorted(p.name for p in foreign.iterdir()) == ["cat.jpg"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


def test_web_command_refuses_a_model_without_feature_metadata(onnxruntime_web, tmp_path, cli):
    import onnx

    model = onnx.load(str(MODEL))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    result = cli("web", bare, "-o", tmp_path / "site")
    assert result.rc == 2 and "no feature metadata" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "site").exists()


def test_web_command_refuses_a_model_with_a_dynamic_time_axis(onnxruntime_web, tmp_path, cli, build_model):
    """The page cuts the model's fixed windows; a dynamic-time model is explained whole by the CLI and the service."""
    import onnx
    from test_dynamic_recordings import log_mel_model

    path = tmp_path / "dyn.onnx"
    onnx.save(log_mel_model(build_model), str(path))
    result = cli("web", path, "-o", tmp_path / "site")
    assert result.rc == 2 and "dynamic" in result.err and result.err.strip().count("\n") == 0
    assert not (tmp_path / "site").exists()


def test_explainer_needs_no_operator_that_webgpu_lacks(site):
    """What onnxruntime-web's WebGPU backend lacks or gets wrong: MaxPool's Indices output,
    ScatterElements, and Concat/Sum of more than 7 inputs (a limit of 8 storage buffers)."""
    import onnx

    model = onnx.load(str(site / "explainer.onnx"))
    assert [n.name for n in model.graph.node if n.op_type == "MaxPool" and len(n.output) > 1] == []
    assert [n.name for n in model.graph.node if n.op_type == "ScatterElements"] == []
    assert max(len(n.input) for n in model.graph.node) <= 7


def test_service_serves_the_in_browser_site_beside_the_viewer(site):
    """`lrp-onnx serve --browser`: the viewer links to /browser/NAME/, the same static site."""
    import httpx

    sys.path.insert(0, str(Path(__file__).parent))
    from _server_fixtures import running_server
    from lrp_onnx.service.app import create_app

    app = create_app({"gender": MODEL}, browser_sites={"gender": site})
    with running_server(app) as base:
        assert httpx.get(f"{base}/browser/").json() == {"sites": {"gender": "/browser/gender/"}}
        page = httpx.get(f"{base}/browser/gender/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert page.text == (site / "index.html").read_text()
        assert httpx.get(f"{base}/browser/gender/site.json").json() == json.loads((site / "site.json").read_text())
        viewer = httpx.get(f"{base}/").text
        assert 'id="browser-link"' in viewer
