"""`lrp-onnx reproduce --budget tiny` on tiny corpora written here: every stage runs (real
training, export, explainers, flipping, augmentation), the report quotes the run's own
numbers, and a second invocation reuses every stage."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile

from lrp_onnx.cli.main import main

pytest.importorskip("torch")

SR = 16000


def voiced(f0: float, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = f0 * rng.uniform(0.9, 1.1)
    wave = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in range(1, 10))
    wave = wave * np.hanning(len(t)) + 0.01 * rng.standard_normal(len(t))
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def write_meta(root: Path, genders: dict[int, str]) -> None:
    meta = {f"{s:02d}": {"gender": g, "age": "30"} for s, g in genders.items()}
    (root / "audioMNIST_meta.txt").write_text(json.dumps(meta))
    manifest = {"format": "lrp-onnx-synth/1",
                "speakers": {f"{s:02d}": {"gender": g, "base_voice": f"voice{s}"} for s, g in genders.items()}}
    (root / "synth_manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    digits, speakers = root / "digits", root / "speakers"
    genders = {s: ("female" if s % 2 else "male") for s in range(1, 9)}
    for s, g in genders.items():
        (digits / f"{s:02d}").mkdir(parents=True)
        for d in range(2):
            for r in range(2):
                wave = voiced(210 if g == "female" else 105, 0.5, s * 100 + d * 10 + r)
                soundfile.write(str(digits / f"{s:02d}" / f"{d}_{s:02d}_{r}.wav"), wave, SR)
    write_meta(digits, genders)
    spk = {s: ("female" if s % 2 else "male") for s in range(1, 5)}
    for s in spk:
        (speakers / f"{s:02d}").mkdir(parents=True)
        for u in range(6):
            soundfile.write(str(speakers / f"{s:02d}" / f"{s:02d}_{u}.wav"), voiced(90 + 40 * s, 0.8, s * 10 + u), SR)
    write_meta(speakers, spk)
    return digits, speakers


@pytest.mark.slow
def test_reproduce_tiny_runs_every_stage_and_resumes(corpora, tmp_path, capsys):
    digits, speakers = corpora
    out = tmp_path / "study"
    argv = ["reproduce", str(out), "--data", str(digits), "--speaker-data", str(speakers), "--budget", "tiny",
            "--threads", "2", "--no-progress"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    g = results["gender"]
    # Table 1 comes from the flip results of the two models, and the report quotes it
    flip = json.loads((out / "results" / "flip-gender.json").read_text())
    assert g["table1"]["AlexNet"]["0.5%"] == flip["curves"]["morf"]["accuracy"][flip["steps_percent"].index(0.5)]
    assert f"{100 * g['table1']['AlexNet']['0.5%']:.1f} %" in report
    assert f"{g['flip']['ratio']['0-10']:.3f}" in report
    assert "12.3 %" in report and "28.4 %" in report  # the study's numbers, beside ours
    for figure in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG", figure
    for number in ("1-2-female", "3-gender", "4-gender", "5", "6-", "6b", "7", "8", "9", "10", "11", "12"):
        assert any(p.name.startswith(f"fig{number}") for p in (out / "figures").iterdir()), number
    assert set(results["speaker"]["flip"]) == {"lrp0", "epsilon", "epsilon-gamma"}
    assert g["augmentation"]["bins_per_sample"] == round(0.005 * 227 * 227)
    assert (out / "models" / "gender-augmented.onnx").exists() and (out / "models" / "gender-control.onnx").exists()
    assert set(g["table1"]) == {"AlexNet", "AlexNet_control", "AlexNet_augmented"}
    transfer = json.loads((out / "results" / "flip-gender-augmented-original-bins.json").read_text())
    assert transfer["ranked_by"] == "models/gender.onnx" and "random" not in transfer["curves"]
    assert g["table1"]["AlexNet_augmented"]["0.5% original bins"] == transfer["curves"]["morf"]["accuracy"][
        transfer["steps_percent"].index(0.5)]

    # a second invocation reuses every stage; a removed result is recomputed alone
    (out / "results" / "flip-speaker-lrp0.json").unlink()
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "== train-gender: cached" in err and "== flip-gender: cached" in err
    assert "== flip-speaker-lrp0\n" in err and "$ lrp-onnx train" not in err
    again = json.loads((out / "results.json").read_text())
    assert again["gender"]["table1"] == g["table1"]
    assert again["speaker"]["flip"]["lrp0"]["curves"] == results["speaker"]["flip"]["lrp0"]["curves"]

    # other settings in the same OUT_DIR are refused
    assert main(["reproduce", str(out), "--data", str(digits), "--budget", "quick"]) == 2
    assert "other settings" in capsys.readouterr().err
