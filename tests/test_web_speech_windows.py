"""The page's speech detector (web/js/features.js, run by node) picks the same decision windows as
lrp_onnx.audio.speech.decision_window_starts, on recordings made to reach each of its branches: speech
windows between pauses, no window mostly speech (the most speech-filled one), speech throughout, a
recording no longer than the window, and rates whose 25 ms / 10 ms frames are not whole samples."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lrp_onnx.audio.speech import decision_window_starts

NODE = shutil.which("node")
FEATURES_JS = Path(__file__).resolve().parents[1] / "web" / "js" / "features.js"

pytestmark = pytest.mark.skipif(NODE is None, reason="no node to run the page's JavaScript")

RUNNER = """
import { decisionWindowStarts } from "./features.mjs";
import fs from "fs";
const cases = JSON.parse(fs.readFileSync("cases.json"));
const out = cases.map((c) => {
  const b = fs.readFileSync(c.file);
  return decisionWindowStarts(new Float32Array(b.buffer, b.byteOffset, b.length / 4), c.rate, c.window);
});
console.log(JSON.stringify(out));
"""


def _bursts(rate: int, seconds: float, spans, rng) -> np.ndarray:
    """Low noise with louder modulated tones (a crude voice) in ``spans`` (start, end) seconds."""
    t = np.arange(int(seconds * rate)) / rate
    wave = 1e-3 * rng.standard_normal(t.size)
    for start, end in spans:
        inside = (t >= start) & (t < end)
        wave[inside] += 0.3 * np.sin(2 * np.pi * 180 * t[inside]) * (1 + np.sin(2 * np.pi * 4 * t[inside]))
    return wave.astype(np.float32)


def test_page_picks_the_same_speech_windows_as_python(tmp_path):
    rng = np.random.default_rng(0)
    cases = [  # (rate, window, wave)
        (8000, 8000, _bursts(8000, 5.0, [(0.5, 1.8), (3.1, 4.0)], rng)),   # speech between pauses
        (8000, 8000, _bursts(8000, 4.0, [(2.2, 2.5)], rng)),               # no window mostly speech
        (8000, 8000, _bursts(8000, 3.5, [(0.0, 3.5)], rng)),               # speech throughout
        (8000, 8000, _bursts(8000, 0.7, [(0.1, 0.6)], rng)),               # shorter than the window
        (22050, 22050, _bursts(22050, 3.3, [(0.2, 1.1), (1.9, 3.0)], rng)),  # frames of 551.25 samples
        (16000, 32000, _bursts(16000, 9.0, [(1.0, 2.0), (4.5, 8.0)], rng)),  # 2 s windows
    ]
    spec = []
    for k, (rate, window, wave) in enumerate(cases):
        wave.tofile(tmp_path / f"wave{k}.f32")
        spec.append({"file": f"wave{k}.f32", "rate": rate, "window": window})
    (tmp_path / "cases.json").write_text(json.dumps(spec))
    shutil.copy(FEATURES_JS, tmp_path / "features.mjs")
    (tmp_path / "run.mjs").write_text(RUNNER)
    result = subprocess.run([NODE, "run.mjs"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    page = json.loads(result.stdout)
    python = [decision_window_starts(wave, rate, window).tolist() for rate, window, wave in cases]
    assert page == python
    # each branch reached: pauses skipped, the most speech-filled window off the grid, every window, one window
    assert python[0] == [0, 8000, 24000] and len(python[1]) == 1 and python[1][0] % 8000 != 0
    assert python[2] == [0, 8000, 16000] and python[3] == [0]
