"""An offline speech corpus from Debian's synthesizers, in the AudioMNIST layout.

AudioMNIST and VoxCeleb cannot be downloaded everywhere, so ``lrp-onnx data synth``
stands in with pseudo-speakers built on *base voices*: espeak-ng driving MBROLA
databases (each recorded from one real speaker), flite (CMU ARCTIC speakers), pico and
espeak-ng's rule-based formant voices. Each pseudo-speaker draws its own pitch,
speaking rate, formant scale, microphone band, room reverb and noise level; each
utterance jitters pitch and rate, start offset, gain and noise. Every random number
comes from ``numpy.random.default_rng([seed, ...])`` keyed by what it belongs to, so
a corpus is identical for a seed whatever ``--jobs`` is and however often it resumes.

Gender is verified, not taken from package descriptions: before generating, every
base voice's *natural* median F0 is measured (MBROLA: the database with espeak's
intonation stripped; others: default settings) and a voice whose F0 contradicts its
gender in :data:`BASE_VOICES` (threshold :data:`GENDER_F0_THRESHOLD_HZ`) is left out.
The measured values go to ``synth_manifest.json``.

The synthesizers are installed by ``scripts/install-speech-deps.sh``; this module
only runs them. Audio made from MBROLA databases must not be redistributed
(non-commercial licence): generate it where it is needed.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.signal

from ..audio.corpora import GENDER_LABELS, MANIFEST_FILE, META_FILE
from ..audio.io import resample
from ..lrp_graph.errors import ConfigError, InputError
from ..runtime.io import atomic_write, write_wav
from .voices import (
    BASE_VOICES,
    CALIBRATION_TEXT,
    DIGIT_WORDS,
    F0_RANGE,
    GENDER_F0_THRESHOLD_HZ,
    WORK_RATE,
    BaseVoice,
    Kind,
    _knob_for,
    _sox_pitch,
    available_voices,
    median_f0,
    synthesize,
    verify_voices,
)

__all__ = [
    "BaseVoice",
    "BASE_VOICES",
    "SpeakerParams",
    "CorpusSettings",
    "available_voices",
    "synthesize",
    "median_f0",
    "verify_voices",
    "plan_speakers",
    "render_utterance",
    "generate_corpus",
    "DIGIT_WORDS",
    "GENDER_F0_THRESHOLD_HZ",
]

@dataclass(frozen=True)
class SpeakerParams:
    """One pseudo-speaker: a base voice plus a fixed voice, channel and room."""

    speaker: int
    gender: str
    base_voice: str
    f0_hz: float           # target median F0
    rate: float            # speaking rate factor
    formant: float         # spectral envelope scale (resampling)
    highpass_hz: float     # microphone band
    lowpass_hz: float
    reverb_rt60_s: float
    reverb_mix: float
    snr_db: float
    noise: str             # "white" | "pink": the speaker's usual noise colour


def _female_ids(n_speakers: int, n_female: int, rng: np.random.Generator) -> set[int]:
    """AudioMNIST's female speaker numbers first (so the study's gender folds apply), then
    others drawn at random, the study's male numbers only when nothing else is left."""
    study_female = [12, 26, 28, 36, 43, 47, 52, 56, 57, 58, 59, 60]
    study_male = {2, 7, 23, 25, 37, 38, 41, 44, 45, 48, 50, 53}
    chosen = [s for s in study_female if s <= n_speakers][:n_female]
    for pool in ([s for s in range(1, n_speakers + 1) if s not in chosen and s not in study_male],
                 [s for s in sorted(study_male) if s <= n_speakers]):
        extra = min(n_female - len(chosen), len(pool))
        chosen += [pool[i] for i in sorted(rng.choice(len(pool), size=extra, replace=False))] if extra > 0 else []
    return set(chosen)


def plan_speakers(n_speakers: int, n_female: int, seed: int, voice_names: dict[str, list[str]]) -> list[SpeakerParams]:
    """Pseudo-speakers 1..n: gender, base voice (rotated through the shuffled voices of that
    gender), and per-speaker voice/channel parameters, all drawn from ``seed``."""
    if not 0 <= n_female <= n_speakers or n_speakers < 1 or n_speakers > 99:
        raise InputError(f"need 1 <= speakers <= 99 and 0 <= female <= speakers, got {n_speakers} and {n_female}")
    for gender, count in (("female", n_female), ("male", n_speakers - n_female)):
        if count and not voice_names.get(gender):
            raise ConfigError(f"no verified {gender} base voice is installed (run scripts/install-speech-deps.sh)")
    rng = np.random.default_rng([seed, 0])
    females = _female_ids(n_speakers, n_female, rng)
    order = {g: [voice_names[g][i] for i in rng.permutation(len(voice_names[g]))] for g in voice_names}
    counters = {"female": 0, "male": 0}
    speakers = []
    for speaker in range(1, n_speakers + 1):
        gender = "female" if speaker in females else "male"
        voice = order[gender][counters[gender] % len(order[gender])]
        counters[gender] += 1
        r = np.random.default_rng([seed, 1, speaker])
        speakers.append(SpeakerParams(
            speaker=speaker,
            gender=gender,
            base_voice=voice,
            f0_hz=round(float(r.uniform(*F0_RANGE[gender])), 2),
            rate=round(float(r.uniform(0.85, 1.15)), 4),
            formant=round(float(r.uniform(0.94, 1.06)), 4),
            highpass_hz=round(float(r.uniform(60, 200)), 1),
            lowpass_hz=round(float(r.uniform(5000, 7800)), 1),
            reverb_rt60_s=round(float(r.uniform(0.1, 0.4)), 3),
            reverb_mix=round(float(r.uniform(0.0, 0.3)), 3),
            snr_db=round(float(r.uniform(15, 40)), 2),
            noise=str(r.choice(["white", "pink"])),
        ))
    return speakers


# --------------------------------------------------------------------------- rendering


def _trim(wave: np.ndarray, sr: int, threshold_db: float = -40.0) -> np.ndarray:
    """Cut leading/trailing silence: 10 ms frames below ``threshold_db`` re the loudest frame."""
    hop = sr // 100
    n = wave.size // hop
    if n == 0:
        return wave
    rms = np.sqrt(np.mean(wave[: n * hop].reshape(n, hop) ** 2, axis=1))
    active = np.nonzero(rms > rms.max() * 10 ** (threshold_db / 20))[0]
    if active.size == 0:
        return wave[:0]
    return wave[active[0] * hop : min(wave.size, (active[-1] + 1) * hop)]


def _formant_shift(wave: np.ndarray, sr: int, factor: float, sr_out: int) -> np.ndarray:
    """Scale every frequency (formants and F0) by ``factor`` and resample to ``sr_out``:
    play the samples as if recorded at ``sr * factor`` (rounded to 100 Hz)."""
    playback = round(sr * factor / 100.0) * 100
    return resample(wave, playback, sr_out) if playback != sr_out else wave.astype(np.float32)


def _room(wave: np.ndarray, sr: int, rt60: float, mix: float, seed: Sequence[int]) -> np.ndarray:
    """The speaker's room: an exponentially decaying noise impulse response (-60 dB after
    ``rt60``; drawn from ``seed``, so fixed per speaker), mixed ``mix`` wet."""
    if mix <= 0:
        return wave
    r = np.random.default_rng(list(seed))
    t = np.arange(int(rt60 * sr)) / sr
    ir = r.standard_normal(t.size) * np.exp(-6.9078 * t / rt60)
    ir[0] = 0.0
    wet = scipy.signal.fftconvolve(wave, ir)
    wet *= np.sqrt(np.sum(wave**2) / max(np.sum(wet**2), 1e-20))
    dry = np.concatenate([wave, np.zeros(wet.size - wave.size)])
    return _trim((1 - mix) * dry + mix * wet, sr, -50.0)


def _noise(n: int, colour: str, r: np.random.Generator) -> np.ndarray:
    white = r.standard_normal(n)
    if colour == "white":
        return white
    spectrum = np.fft.rfft(white)
    spectrum[1:] /= np.sqrt(np.arange(1, spectrum.size))  # 1/f power
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n)


def render_utterance(
    speaker: SpeakerParams,
    check: dict,
    text: str,
    seed: Sequence[int],
    sample_rate: int,
    max_seconds: float,
) -> np.ndarray:
    """One utterance of ``speaker`` saying ``text``, float32 at ``sample_rate``, at most ``max_seconds`` long.

    Pipeline: engine at jittered pitch/rate (compensated for the formant scale) ->
    trim -> (pitch shift by sox for voices without a pitch knob) -> formant scale ->
    microphone band (2nd-order Butterworth high-pass, 4th-order low-pass) -> room ->
    start offset 0-120 ms -> gain -12..-1 dB peak -> noise at the speaker's SNR +-5 dB.
    Too long: the engine is asked to speak faster (up to 4 tries), then cut with a fade.
    """
    r = np.random.default_rng(list(seed))
    voice = _voice_by_name(speaker.base_voice)
    f0 = speaker.f0_hz * r.uniform(0.92, 1.08)
    rate = speaker.rate * r.uniform(0.92, 1.08)
    offset = int(r.uniform(0.0, 0.12) * sample_rate)
    gain_db = r.uniform(-12.0, -1.0)
    snr_db = speaker.snr_db + r.uniform(-5.0, 5.0)
    colour = speaker.noise if r.uniform() < 0.8 else ("pink" if speaker.noise == "white" else "white")
    limit = int(max_seconds * sample_rate) - offset
    knob = _knob_for(check, f0 / speaker.formant)
    for _ in range(4):
        raw, sr = synthesize(voice, text, pitch=knob, rate=rate / speaker.formant)
        wave = _trim(resample(raw, sr, WORK_RATE), WORK_RATE)
        if knob is None:  # no pitch knob: shift the natural F0 (calibration[0][1]) to the target
            natural = check["calibration"][0][1]
            wave = _sox_pitch(wave, WORK_RATE, 1200 * np.log2(f0 / speaker.formant / natural))
        wave = _formant_shift(wave, WORK_RATE, speaker.formant, sample_rate).astype(np.float64)
        nyquist = sample_rate / 2
        sos = scipy.signal.butter(2, speaker.highpass_hz, "highpass", fs=sample_rate, output="sos")
        wave = scipy.signal.sosfilt(sos, wave)
        if speaker.lowpass_hz < 0.95 * nyquist:
            wave = scipy.signal.sosfilt(scipy.signal.butter(4, speaker.lowpass_hz, "lowpass", fs=sample_rate, output="sos"), wave)
        wave = _room(wave, sample_rate, speaker.reverb_rt60_s, speaker.reverb_mix, [seed[0], 6, speaker.speaker])
        if wave.size <= limit:
            break
        rate *= wave.size / limit * 1.03
    if wave.size > limit:
        fade = min(wave.size, sample_rate // 50)
        wave = wave[:limit]
        wave[-fade:] *= np.linspace(1.0, 0.0, fade)
    speech_power = np.mean(wave**2)
    wave = np.concatenate([np.zeros(offset), wave])
    noise = _noise(wave.size, colour, r)
    noise *= np.sqrt(speech_power / np.mean(noise**2) * 10 ** (-snr_db / 10))
    wave = wave + noise
    wave *= 10 ** (gain_db / 20) / max(np.max(np.abs(wave)), 1e-9)
    return wave.astype(np.float32)


_VOICES_BY_NAME = {v.name: v for v in BASE_VOICES}


def _voice_by_name(name: str) -> BaseVoice:
    try:
        return _VOICES_BY_NAME[name]
    except KeyError:
        raise ConfigError(f"unknown base voice {name!r}") from None


# --------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class CorpusSettings:
    """Everything that determines a corpus (stored in the manifest; a resume must match it)."""

    kind: Kind = "digits"
    speakers: int = 60
    female: int = 12
    reps: int = 50           # digits: repetitions per digit; speaker: utterances per speaker
    seed: int = 0
    sample_rate: int = 16000
    max_seconds: float = 1.0  # digits 1.0 (AudioMNIST window), speaker 2.0 (log-mel window)
    voices: tuple[str, ...] | None = None  # restrict base voices: names ("espeak:f1") or engines ("flite")

    def __post_init__(self) -> None:
        if not 1 <= self.speakers <= 99 or not 0 <= self.female <= self.speakers:
            raise InputError(f"need 1 <= speakers <= 99 and 0 <= female <= speakers, got {self.speakers} and {self.female}")
        if self.reps < 1 or self.max_seconds <= 0.2 or not 4000 <= self.sample_rate <= 96000:
            raise InputError("need reps >= 1, max_seconds > 0.2 and a sample rate in 4000..96000 Hz")
        if self.kind not in ("digits", "speaker"):
            raise InputError(f"corpus kind must be 'digits' or 'speaker', got {self.kind!r}")

    def select(self, voices: Sequence[BaseVoice]) -> list[BaseVoice]:
        """The base voices this corpus may use, from ``voices`` (the installed ones)."""
        if not self.voices:
            return list(voices)
        known = {v.name for v in BASE_VOICES} | {v.engine for v in BASE_VOICES}
        unknown = sorted(set(self.voices) - known)
        if unknown:
            raise ConfigError(f"unknown base voice or engine {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        return [v for v in voices if v.name in self.voices or v.engine in self.voices]


def _speaker_text(seed: int, speaker: int, utterance: int) -> str:
    r = np.random.default_rng([seed, 3, speaker, utterance])
    return " ".join(DIGIT_WORDS[d] for d in r.integers(0, 10, size=int(r.integers(5, 7))))


def _tasks(settings: CorpusSettings, speakers: list[SpeakerParams], root: Path) -> list[tuple]:
    tasks = []
    for sp in speakers:
        folder = root / f"{sp.speaker:02d}"
        if settings.kind == "digits":
            for digit in range(10):
                for rep in range(settings.reps):
                    tasks.append((folder / f"{digit}_{sp.speaker:02d}_{rep}.wav", sp, DIGIT_WORDS[digit],
                                  (settings.seed, 2, sp.speaker, digit, rep)))
        else:
            for u in range(settings.reps):
                tasks.append((folder / f"{sp.speaker:02d}_{u}.wav", sp, _speaker_text(settings.seed, sp.speaker, u),
                              (settings.seed, 4, sp.speaker, u)))
    return tasks


_WORKER_STATE: dict = {}


def _init_worker(checks: dict, settings: CorpusSettings) -> None:
    _WORKER_STATE.update(checks=checks, settings=settings)


def _render_task(task: tuple) -> tuple[str, str]:
    path, sp, text, seed = task
    settings: CorpusSettings = _WORKER_STATE["settings"]
    check = _WORKER_STATE["checks"][sp.base_voice]
    wave = render_utterance(sp, check, text, seed, settings.sample_rate, settings.max_seconds)
    write_wav(path, wave, settings.sample_rate)
    return str(path), text


def _speaker_f0(sp: SpeakerParams, check: dict, settings: CorpusSettings) -> float:
    """Median F0 of a clean test utterance of the pseudo-speaker (no noise), for the manifest."""
    seed = (settings.seed, 5, sp.speaker)
    clean = SpeakerParams(**{**asdict(sp), "snr_db": 80.0, "reverb_mix": 0.0})
    return round(median_f0(render_utterance(clean, check, CALIBRATION_TEXT, seed, settings.sample_rate, 30.0),
                           settings.sample_rate), 1)


def generate_corpus(
    out_dir: str | Path,
    settings: CorpusSettings,
    *,
    jobs: int = 1,
    progress: bool = True,
    log=print,
) -> dict:
    """Write (or complete) a corpus in ``out_dir``; returns the manifest.

    Layout: ``NN/D_NN_R.wav`` (digits) or ``NN/NN_U.wav`` (speaker), plus
    ``audioMNIST_meta.txt`` (genders) and ``synth_manifest.json`` (settings, verified
    voices, pseudo-speakers; for the speaker corpus also each utterance's text).
    Files already present are kept (every file is written atomically, so a present
    file is complete): an interrupted run resumes where it stopped. The manifest is
    written first, so a partly generated folder is already readable.
    """
    root = Path(out_dir)
    manifest_path = root / MANIFEST_FILE
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: exists and is not a folder")
    if root.is_dir() and not manifest_path.exists() and any(root.iterdir()):
        raise InputError(f"{root}: folder is not empty and holds no synthetic corpus; give a new or empty folder")
    previous = _read_previous(manifest_path)
    if previous is not None and {"voices": None, **previous.get("settings", {})} != json.loads(json.dumps(asdict(settings))):
        raise InputError(f"{root} holds a corpus made with other settings {previous.get('settings')}; "
                         "use another folder or the same options")
    started = time.time()
    if previous is not None:
        log(f"resuming the corpus in {root}")
        manifest = previous
    else:
        manifest = _new_manifest(settings, log)
    checks = manifest["voices"]
    speakers = [SpeakerParams(**{k: v for k, v in entry.items() if k != "measured_f0_hz"})
                for entry in manifest["speakers"].values()]
    tasks = _tasks(settings, speakers, root)
    if settings.kind == "speaker":
        manifest["texts"] = {path.relative_to(root).as_posix(): text for path, _, text, _ in tasks}
    manifest["utterances"] = len(tasks)
    _write_json(manifest_path, manifest)
    meta = {f"{sp.speaker:02d}": {"gender": sp.gender, "synthetic": True, "base_voice": sp.base_voice} for sp in speakers}
    _write_json(root / META_FILE, meta)
    for sp in speakers:
        folder = root / f"{sp.speaker:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".*.tmp"):
            stale.unlink()
    todo = [t for t in tasks if not t[0].exists()]
    log(f"{len(tasks) - len(todo)} of {len(tasks)} utterances present; rendering {len(todo)} with {jobs} job(s)")
    _render_all(todo, checks, settings, jobs, progress)
    elapsed = time.time() - started
    log(f"done: {len(tasks)} utterances, {len(speakers)} speakers in {root} ({elapsed:.0f} s)")
    return manifest


def _new_manifest(settings: CorpusSettings, log) -> dict:
    """Verify the base voices, plan the pseudo-speakers and check each one's F0."""
    voices = settings.select(available_voices())
    if not voices:
        raise ConfigError("none of the requested speech synthesizers is installed "
                          "(run scripts/install-speech-deps.sh)")
    log(f"checking {len(voices)} base voices (natural F0 and pitch calibration) ...")
    results = verify_voices(voices)
    for c in results:
        if not c.ok:
            log(f"warning: leaving out {c.name}: natural median F0 {c.natural_f0_hz} Hz sounds "
                f"{c.measured_gender}, expected {c.gender}")
    checks = {c.name: asdict(c) for c in results if c.ok}
    names = {g: sorted(n for n, c in checks.items() if c["gender"] == g) for g in GENDER_LABELS}
    entries = {}
    for sp in plan_speakers(settings.speakers, settings.female, settings.seed, names):
        measured = _speaker_f0(sp, checks[sp.base_voice], settings)
        if (measured > GENDER_F0_THRESHOLD_HZ) != (sp.gender == "female"):
            raise ConfigError(f"pseudo-speaker {sp.speaker:02d} ({sp.base_voice}) has median F0 {measured} Hz, "
                              f"which does not fit {sp.gender}: pitch calibration failed")
        entries[f"{sp.speaker:02d}"] = {**asdict(sp), "measured_f0_hz": measured}
    return {
        "format": "lrp-onnx-synth/1",
        "settings": asdict(settings),
        "voices": checks,
        "rejected_voices": {c.name: asdict(c) for c in results if not c.ok},
        "speakers": entries,
    }


def _render_all(todo: list[tuple], checks: dict, settings: CorpusSettings, jobs: int, progress: bool) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="utt", disable=not progress, file=sys.stderr)
    try:
        if jobs <= 1 or len(todo) < 2:
            _init_worker(checks, settings)
            for task in todo:
                _render_task(task)
                bar.update()
        else:
            with get_context("fork" if sys.platform != "win32" else "spawn").Pool(
                jobs, initializer=_init_worker, initargs=(checks, settings)
            ) as pool:
                for _ in pool.imap_unordered(_render_task, todo, chunksize=8):
                    bar.update()
    finally:
        bar.close()


def _read_previous(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: broken manifest ({exc}); delete the folder to start over") from None
    if previous.get("format") != "lrp-onnx-synth/1":
        raise InputError(f"{path}: not a manifest written by lrp-onnx data synth")
    return previous


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, suffix=".tmp", make_parents=True) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
