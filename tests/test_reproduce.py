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

import lrp_onnx
from lrp_onnx.cli.main import main
from lrp_onnx.lrp_graph.errors import InputError

pytest.importorskip("torch")

SR = 16000
REAL = Path(lrp_onnx.__file__).resolve().parent.parent / "shared" / "real-speech" / "librispeech-train"
needs_real = pytest.mark.skipif(not (REAL / "manifest.csv").is_file(),
                                reason=f"real speech not found at {REAL} (CI keeps ../shared beside the checkout)")


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


def write_real_subset(root: Path, n_per_gender: int = 4, seconds: float = 3.0) -> Path:
    """A real-speech folder: the first ``seconds`` of the recordings of ``n_per_gender`` speakers per gender."""
    import csv

    with open(REAL / "manifest.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["speaker"]))
    rows = [r for g in ("female", "male") for r in [r for r in rows if r["gender"] == g][:n_per_gender]]
    root.mkdir(parents=True)
    for r in rows:
        wave, sr = soundfile.read(REAL / r["file"], dtype="float32")
        soundfile.write(root / r["file"], wave[: int(seconds * sr)], sr)
    lines = ["file,speaker,gender,seconds"] + [f"{r['file']},{r['speaker']},{r['gender']},{seconds}" for r in rows]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.slow
@needs_real
def test_reproduce_with_real_speech_reports_held_out_speakers(corpora, tmp_path, capsys):
    digits, _ = corpora
    real = write_real_subset(tmp_path / "real")
    out = tmp_path / "study"
    argv = ["reproduce", "-o", str(out), "--data", str(digits), "--budget", "tiny", "--skip-speaker",
            "--real-speech", str(real), "--threads", "2", "--no-progress"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    r = results["real_speech"]
    # the gender model trained on digits and real speech; evaluated on its own held-out real speakers
    run = Path(results["gender"]["train"]["run"])
    folders = json.loads((run / "split.json").read_text())["split"]["folders"]
    real_folder = next(f for f in folders if Path(f["data"]).name == "real")
    test = {Path(p).name for p in real_folder["files"]["test"]}
    trained = {Path(p).name for p in real_folder["files"]["train"] + real_folder["files"]["val"]}
    assert test and not test & trained
    assert {row["file"] for row in r["real"]["per_recording"]} == test
    assert r["held_out"] == "test speakers of the model's training split" and r["composite"] == "paper-alexnet"
    assert results["gender"]["split"]["test"] > 0  # the study's figures: the synthetic part of the split
    report = (out / "report.md").read_text()
    section = report[report.index("## Real speech"):]
    assert f"{100 * r['real']['recording_balanced_accuracy']:.1f} %" in section
    assert f"{100 * r['real']['window_balanced_accuracy']:.1f} %" in section
    assert "| 3000-3500 |" in section and "synthetic" in section
    assert ("The 3-3.5 kHz shortcut is gone." in section) != ("The 3-3.5 kHz band still stands out." in section)
    assert "--real-speech" in report  # the command that regenerates it
    ratio = r["flip"]["ratio"].get("0-10")
    assert ratio is None or f"{ratio:.3f}" in section
    assert r["flip"]["windows"] > 0 and set(r["real"]["recording_accuracy"]) <= {"female", "male"}

    # --real-split: the held-out speakers of another split; refused where the model heard one of them
    from lrp_onnx.study.stages import held_out_real

    def split_file(name: str, test_files: list[str]) -> Path:
        folder = {"data": str(real), "method": "speaker", "files": {"train": [], "val": [], "test": test_files}}
        path = tmp_path / name
        path.write_text(json.dumps({"split": {"method": "mix", "folders": [folder]}}))
        return path

    files, how = held_out_real(str(run), str(real), str(split_file("same.json", sorted(test))))
    assert {p.name for p in files} == test and "same.json" in how
    with pytest.raises(InputError, match="were heard in training"):
        held_out_real(str(run), str(real), str(split_file("heard.json", sorted(trained)[:1])))
    assert main(["reproduce", "-o", str(tmp_path / "x"), "--budget", "tiny", "--real-split", str(run / "split.json")]) == 2
    assert "--real-split needs --real-speech" in capsys.readouterr().err
    assert main(["reproduce", "-o", str(tmp_path / "x"), "--budget", "tiny", "--real-speech", str(digits)]) == 2
    assert "not a real-speech folder" in capsys.readouterr().err
