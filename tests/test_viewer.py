"""The viewer page in a real headless Chromium (Debian's package, driven by Playwright):
pick an example recording, upload another, and see the predicted label, the heatmap image
and the players appear."""
from __future__ import annotations

import os
import shutil

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

from _server_fixtures import LABELS, running_server, spectrogram_model, voice, write_wav  # noqa: E402

from lrp_onnx.runtime import Explainer  # noqa: E402
from lrp_onnx.service.app import create_app  # noqa: E402

CHROMIUM = os.environ.get("LRP_ONNX_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "viewer-token"

pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM),
                                reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("viewer-examples")
    write_wav(folder / "low_voice.wav", voice(0.8, 110, 16000, seed=3), 16000)
    upload = write_wav(tmp_path_factory.mktemp("upload") / "my recording.wav", voice(1.6, 230, 44100, seed=4), 44100)
    app = create_app({"gender": Explainer(spectrogram_model(), composite="epsilon-plus")}, token=TOKEN,
                     examples_dir=folder)
    with running_server(app) as url:
        yield url, upload


@pytest.fixture(scope="module")
def page():
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page()
            yield page
        finally:
            browser.close()


def test_viewer_explains_an_example_and_an_upload(served, page):
    url, upload = served
    errors = []  # script errors, and console errors such as Content-Security-Policy violations
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(url + "/")
    assert page.title() == "lrp-onnx viewer"
    # the server wants a token: the page asks for it, then loads models and examples
    page.wait_for_selector("#token-row:not([hidden])")
    page.fill("#token", TOKEN)
    page.dispatch_event("#token", "change")
    expect(page.locator("#example option")).to_have_count(2)
    assert page.input_value("#model") == "gender"
    assert page.input_value("#composite") == "epsilon-plus"

    page.select_option("#example", "low_voice.wav")
    page.wait_for_selector("#heatmaps img.heatmap", timeout=30_000)
    assert page.text_content("#prediction") in LABELS
    assert page.text_content("#status") == "Explained low_voice.wav."
    width = page.eval_on_selector("#heatmaps img.heatmap", "img => img.complete ? img.naturalWidth : 0")
    assert width > 300  # a decoded PNG, not a broken image
    assert page.eval_on_selector("#recording", "a => a.src").startswith("blob:")
    assert page.is_visible("#audible-row")
    first_src = page.eval_on_selector("#heatmaps img.heatmap", "img => img.src")

    page.set_input_files("#file", str(upload))
    expect(page.locator("#status")).to_have_text("Explained my recording.wav.", timeout=30_000)
    assert page.text_content("#prediction") in LABELS
    # 1.6 s: decided from all of its speech windows (the mean of their logits), one picture of it all
    note = page.text_content("#note")
    assert "Decided from the mean of the logits of its" in note and "(1.60 s recording)" in note
    assert "speech window(s) of 1 s" in note
    assert page.eval_on_selector("#heatmaps img.heatmap", "img => img.src") != first_src
    rows = page.locator("#samples tbody tr")
    assert rows.count() == 1 and rows.first.locator("td").nth(1).text_content() in LABELS

    # the explained class can be chosen: both labels are offered and explaining "male" says so
    page.select_option("#target", label="male")
    page.click("#explain")
    expect(page.locator("#samples tbody td:nth-child(4)")).to_have_text("male", timeout=30_000)
    assert errors == []


def test_viewer_shows_server_errors(served, page):
    url, _ = served
    page.goto(url + "/")
    page.fill("#token", "wrong")
    page.dispatch_event("#token", "change")
    expect(page.locator("#status.error")).to_contain_text("invalid bearer token (401)")
