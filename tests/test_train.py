"""`lrp-onnx train`: one epoch of each model on a tiny corpus, bit-exact --resume, bad checkpoints.

Training and export run in a child process (the CLI), so that a native crash inside torch
fails the test with its exit code instead of taking the whole suite down."""
import json

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf
import torch

from lrp_onnx.lrp_graph.errors import InputError
from lrp_onnx.models.training_data import load_waves, wave_set
from lrp_onnx.models.train import load_checkpoint, model_from_checkpoint
from lrp_onnx.audio.features import LogMelSpec


def write_tone_corpus(root, *, kind="digits", speakers=8, digits=2, reps=2, sample_rate=8000, seed=0):
    """A corpus in the layout `lrp-onnx data synth` writes: harmonic tones, low (male) or high (female)
    pitch, one base voice per speaker; digits: NN/D_NN_R.wav (<= 0.6 s); speaker: NN/NN_U.wav (~2 s)."""
    rng = np.random.default_rng(seed)
    meta, voices = {}, {}
    for s in range(1, speakers + 1):
        key, gender = f"{s:02d}", ("female" if s % 2 else "male")
        meta[key], voices[key] = {"gender": gender}, {"base_voice": f"tone{s}"}
        (root / key).mkdir(parents=True)
        f0 = (220.0 if gender == "female" else 110.0) * (1 + 0.04 * s)
        names = ([f"{d}_{key}_{r}.wav" for d in range(digits) for r in range(reps)] if kind == "digits"
                 else [f"{key}_{u}.wav" for u in range(reps)])
        for i, name in enumerate(names):
            seconds = rng.uniform(0.3, 0.6) if kind == "digits" else rng.uniform(1.6, 2.4)
            t = np.arange(int(sample_rate * seconds)) / sample_rate
            wave = sum(np.sin(2 * np.pi * f0 * (k + 1) * (1 + 0.03 * (i % 3)) * t) / (k + 1) for k in range(4))
            wave = 0.3 * wave * np.hanning(t.size) + 0.01 * rng.standard_normal(t.size)
            sf.write(root / key / name, wave.astype(np.float32), sample_rate)
    (root / "audioMNIST_meta.txt").write_text(json.dumps(meta))
    (root / "synth_manifest.json").write_text(json.dumps({"speakers": voices}))
    return root


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_tone_corpus(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def speakers(tmp_path_factory):
    return write_tone_corpus(tmp_path_factory.mktemp("speakers"), kind="speaker", speakers=4, reps=5,
                             sample_rate=16000)


def ok(result, expected_rc: int) -> bool:
    """The child exited with ``expected_rc``; otherwise show what it printed (a crash included)."""
    assert result.rc == expected_rc, f"exit code {result.rc}, expected {expected_rc}:\n{result.err[-3000:]}"
    return True


def train_args(data, out, cache, *extra):
    return ["train", "alexnet", "--data", str(data), "--task", "gender", "--out", str(out), "--cache", str(cache),
            "--batch-size", "4", "--test-fraction", "0.25", "--val-fraction", "0.25", "--val-limit", "4", "--test-limit", "4",
            "--no-progress", *extra]


def test_alexnet_trains_one_epoch_and_logs_metrics(digits, tmp_path, cli_process):
    run = tmp_path / "run"
    assert ok(cli_process(*train_args(digits, run, tmp_path / "cache", "--epochs", "1", "--limit", "8")), 0)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1] and 0 <= metrics[0]["val_acc"] <= 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["sizes"] == {"train": 8, "val": 4, "test": 4}
    assert 0 <= summary["test_acc"] <= 1
    split = json.loads((run / "split.json").read_text())["split"]
    assert split["method"] == "voice"
    train_voices, test_voices = set(split["voices"]["train"]), set(split["voices"]["test"])
    assert train_voices and test_voices and not train_voices & test_voices  # test voices never heard in training
    best = load_checkpoint(run / "best.pt")
    assert best["labels"] == ["male", "female"] and best["task"] == "gender" and best["arch"] == "alexnet"
    assert json.loads(best["features"])["kind"] == "audiomnist-spectrogram"


def test_resume_continues_bit_for_bit(digits, tmp_path, cli_process):
    cache = tmp_path / "cache"
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    # one thread: with several, oneDNN's convolution backward sums in a run-dependent order on some
    # CPUs (measured on an AVX-512 Xeon: two uninterrupted runs differ), so bit-exactness needs one
    one = ("--limit", "8", "--epoch-size", "6", "--threads", "1")
    assert ok(cli_process(*train_args(digits, straight, cache, "--epochs", "2", *one)), 0)
    assert ok(cli_process(*train_args(digits, resumed, cache, "--epochs", "1", *one)), 0)
    assert ok(cli_process(*train_args(digits, resumed, cache, "--epochs", "2", *one, "--resume")), 0)
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(resumed / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    lines = lambda run: [json.loads(x)["train_loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert lines(straight) == lines(resumed)


def test_existing_run_and_changed_options_are_refused(digits, tmp_path, cli_process):
    cache, run = tmp_path / "cache", tmp_path / "run"
    assert ok(cli_process(*train_args(digits, run, cache, "--epochs", "1", "--limit", "4")), 0)
    refused = cli_process(*train_args(digits, run, cache, "--epochs", "2", "--limit", "4"))
    assert ok(refused, 2) and "--resume" in refused.err
    changed = cli_process(*train_args(digits, run, cache, "--epochs", "2", "--limit", "4", "--lr", "0.1", "--resume"))
    assert ok(changed, 2) and "lr" in changed.err
    masks = cli_process(*train_args(digits, run, cache, "--epochs", "2", "--limit", "4", "--spec-masks", "--resume"))
    assert ok(masks, 2) and "spec_masks" in masks.err
    # options of another architecture do not count: the AlexNet has no pooling to change
    other = cli_process(*train_args(digits, run, cache, "--epochs", "2", "--limit", "4", "--pooling", "mean", "--resume"))
    assert ok(other, 0) and load_checkpoint(run / "last.pt")["epoch"] == 2


@pytest.mark.parametrize("content", [b"not a checkpoint", b"PK\x03\x04broken zip", None])
def test_corrupt_or_foreign_checkpoint_is_a_one_line_error(tmp_path, cli_process, content):
    path = tmp_path / "best.pt"
    if content is None:
        torch.save({"some": torch.zeros(2)}, path)  # a valid torch file, but foreign
    else:
        path.write_bytes(content)
    with pytest.raises(InputError):
        load_checkpoint(path)
    result = cli_process("export", path, "-o", tmp_path / "m.onnx")
    assert ok(result, 2)
    err = result.err.strip()
    assert err.startswith("lrp-onnx: error:") and "\n" not in err and str(path) in err
    assert not (tmp_path / "m.onnx").exists()


def test_resnet_trains_one_epoch_on_a_speaker_corpus(speakers, tmp_path, cli_process):
    run = tmp_path / "run"
    args = ("train", "resnet", "--data", str(speakers), "--task", "speaker", "--out", str(run), "--width", "8",
            "--stem-stride", "2", "--embedding-dim", "8", "--batch-size", "4", "--cache", str(tmp_path / "cache"),
            "--no-progress")
    assert ok(cli_process(*args, "--epochs", "1"), 0)
    changed = cli_process(*args, "--epochs", "2", "--pooling", "mean", "--resume")
    assert ok(changed, 2) and "pooling" in changed.err and "'stats'" in changed.err
    best = load_checkpoint(run / "best.pt")
    assert best["labels"] == ["01", "02", "03", "04"]
    assert best["model_config"]["width"] == 8 and best["model_config"]["pooling"] == "stats"  # the default
    features = json.loads(best["features"])
    assert features["kind"] == "log-mel" and features["normalize"] == "none"  # speaker ID keeps the spectrum
    split = json.loads((run / "split.json").read_text())["split"]
    assert split["method"] == "utterance"  # held-out utterances of the training speakers
    assert not set(split["files"]["train"]) & set(split["files"]["test"])
    # export the trained run; onnxruntime reproduces torch on real features
    out = tmp_path / "speaker.onnx"
    assert ok(cli_process("export", run, "-o", out), 0)
    x = np.stack([LogMelSpec(**features).from_file(path) for path in split["files"]["test"][:2]])
    with torch.no_grad():
        expected = model_from_checkpoint(best)(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_npz_inputs_continue_training_from_another_run(digits, tmp_path, cli_process):
    base = tmp_path / "base"
    assert ok(cli_process(*train_args(digits, base, tmp_path / "cache", "--epochs", "1", "--limit", "4")), 0)
    rng = np.random.default_rng(0)
    npz = tmp_path / "augmented.npz"
    np.savez(npz, x=rng.uniform(-80, 0, (6, 1, 227, 227)).astype(np.float32), y=np.array([0, 1] * 3))
    run = tmp_path / "aug"
    assert ok(cli_process("train", "alexnet", "--data", str(npz), "--task", "gender", "--out", str(run), "--init", str(base),
                 "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.34", "--no-progress"), 0)
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["features"] == load_checkpoint(base / "best.pt")["features"]  # the spec travels with --init
    assert ckpt["split"]["method"] == "npz" and ckpt["split"]["sizes"] == {"train": 4, "val": 2, "test": 0}


def test_waveform_cache_is_reused(digits, tmp_path):
    from lrp_onnx.audio.corpora import read_audiomnist
    from lrp_onnx.audio.features import SpectrogramSpec

    utterances = read_audiomnist(digits)[:3]
    spec, cache = SpectrogramSpec(), tmp_path / "cache"
    waves, lengths = load_waves([str(u.path) for u in utterances], spec, cache, progress=False)
    entry = next(cache.iterdir())
    stamp = (entry / "waves.npy").stat().st_mtime_ns
    again, _ = load_waves([str(u.path) for u in utterances], spec, cache, progress=False)
    assert isinstance(again, np.memmap) and (entry / "waves.npy").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again, waves)
    # the features equal the runtime's own feature code on the file
    data = wave_set(utterances, np.zeros(3, dtype=np.int64), spec, cache, progress=False)
    np.testing.assert_allclose(data.inputs(np.array([1]))[0], spec.from_file(utterances[1].path), atol=1e-4)
    rng = np.random.default_rng(0)
    shifted = data.inputs(np.array([0, 1, 2]), rng)
    assert shifted.shape == (3, 1, 227, 227) and not np.allclose(shifted, data.inputs(np.array([0, 1, 2])))


def test_strided_1x1_conv_backward_survives(tmp_path):
    """Regression: the exact layer that crashed training on AVX-512 CPUs (issue 8): the backward pass
    of a strided 1x1 Conv2d, 8 -> 16 channels, stride 2 (the ResNet's downsampling shortcut) on the
    memory format training uses. Run in a child so that heap corruption fails only this test."""
    import subprocess
    import sys

    script = """
import numpy as np, torch
from lrp_onnx.models.train import _place_model, _to_device
torch.manual_seed(0)
conv = torch.nn.Conv2d(8, 16, 1, stride=2)
_place_model(conv, torch.device("cpu"))
x = _to_device(np.random.default_rng(0).standard_normal((4, 8, 32, 100), dtype=np.float32), torch.device("cpu"))
x.requires_grad_()
for _ in range(20):
    conv.zero_grad()
    conv(x).square().sum().backward()
ref = torch.nn.functional.conv2d(x.detach().double(), conv.weight.double(), conv.bias.double(), stride=2)
print(float((conv.weight.grad.double() - 2 * torch.einsum("nohw,nchw->oc", ref, x.detach().double()[:, :, ::2, ::2])[..., None, None]).abs().max()))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit code {proc.returncode}: {proc.stderr[-2000:]}"
    assert float(proc.stdout.strip()) < 1e-2


def test_evaluate_scores_windows_and_whole_parts():
    """Part accuracy: one decision per group, the argmax of the mean of its windows' logits."""
    from lrp_onnx.models.train import evaluate

    class Windows:
        labels = np.asarray([0, 0, 0, 1])
        groups = np.asarray([0, 0, 1, 2])
        logits = np.asarray([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [0.0, 1.0]], dtype=np.float32)

        def __len__(self):
            return 4

        def inputs(self, index, rng=None):
            return self.logits[index]

    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))  # logits = inputs
    result = evaluate(model, Windows(), torch.device("cpu"), batch_size=3, progress=False)
    assert result["acc"] == 0.5  # windows 0 and 3
    assert result["parts"] == 3 and result["part_acc"] == pytest.approx(2 / 3)  # group 0: mean [1, .5] -> 0


def test_speaker_id_keeps_absolute_log_energies_and_other_tasks_do_not():
    from lrp_onnx.models.training_data import default_spec

    assert default_spec("resnet", "speaker").normalize == "none"
    assert default_spec("resnet", "gender").normalize == "mean" and default_spec("resnet").normalize == "mean"
    assert default_spec("alexnet", "gender").kind == "audiomnist-spectrogram"
