"""Make or inspect speech corpora: `data synth` generates an offline AudioMNIST-like corpus with
Debian's speech synthesizers (install them with scripts/install-speech-deps.sh), `data voices`
lists the installed voices, `data info` summarises a corpus folder.

examples:
  lrp-onnx data synth -o corpora/digits --kind digits --speakers 60 --female 30 --reps 20 --jobs 2
  lrp-onnx data info corpora/digits
  lrp-onnx data voices
"""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from ..lrp_graph.errors import InputError
from .options import legacy_output

#: Defaults per corpus kind: AudioMNIST's size for digits (60 x 10 x 50), a small
#: speaker-ID corpus of ~2 s digit strings.
KIND_DEFAULTS = {
    "digits": {"speakers": 60, "female": 12, "reps": 50, "max_seconds": 1.0},
    "speaker": {"speakers": 40, "female": 20, "reps": 40, "max_seconds": 2.0},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    synth = sub.add_parser(
        "synth",
        help="generate an offline speech corpus with Debian's synthesizers",
        description="Generate an AudioMNIST-like digit corpus (OUT_DIR/NN/D_NN_R.wav) or a speaker-ID "
        "corpus of ~2 s digit strings (OUT_DIR/NN/NN_U.wav) from espeak-ng/MBROLA, flite, pico and "
        "espeak formant voices, with audioMNIST_meta.txt and synth_manifest.json. Deterministic for a "
        "seed; an interrupted run resumes. Install the synthesizers with scripts/install-speech-deps.sh.",
        epilog="example:\n  lrp-onnx data synth -o corpora/digits --kind digits --speakers 4 --reps 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    synth.add_argument("-o", "--output", dest="out_dir", type=Path, metavar="OUT_DIR",
                       help="corpus folder to write (or to resume)")
    synth.add_argument("legacy_out_dir", nargs="?", type=Path, metavar="OUT_DIR", help=argparse.SUPPRESS)
    synth.add_argument("--kind", choices=sorted(KIND_DEFAULTS), default="digits",
                       help="digits: one spoken digit per file (<= 1 s); speaker: digit strings (<= 2 s)")
    synth.add_argument("--speakers", type=int, help="pseudo-speakers (default 60 digits, 40 speaker)")
    synth.add_argument("--female", type=int, help="female pseudo-speakers (default 12 digits, 20 speaker)")
    synth.add_argument("--reps", type=int,
                       help="digits: repetitions per digit (default 50); speaker: utterances per speaker (default 40)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--sample-rate", type=int, default=16000, metavar="HZ")
    synth.add_argument("--max-seconds", type=float, help="longest utterance (default 1.0 digits, 2.0 speaker)")
    synth.add_argument("--voices", metavar="LIST",
                       help="comma-separated base voices or engines to use, e.g. 'espeak' or "
                       "'flite:slt,espeak:m1' (default: every installed one; see `lrp-onnx data voices`)")
    synth.add_argument("--jobs", type=int, default=1, help="parallel worker processes")
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    synth.set_defaults(data_run=_synth)

    voices = sub.add_parser("voices", help="list installed base voices with their measured F0 and gender",
                            description="Measure every installed base voice's natural median F0 and check "
                            "its gender (what `data synth` does before generating).")
    voices.set_defaults(data_run=_voices)

    info = sub.add_parser("info", help="summarise a corpus folder (AudioMNIST or synthetic)",
                          description="Count utterances, speakers and base voices per gender of a corpus.")
    info.add_argument("corpus", metavar="DIR", type=Path)
    info.set_defaults(data_run=_info)


def run(args: argparse.Namespace) -> int:
    return args.data_run(args)


def _synth(args: argparse.Namespace) -> int:
    from ..models.synth import CorpusSettings, generate_corpus

    legacy_output(args, "data synth")
    defaults = KIND_DEFAULTS[args.kind]

    def pick(name: str):
        return defaults[name] if getattr(args, name) is None else getattr(args, name)

    if args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}")
    settings = CorpusSettings(kind=args.kind, speakers=pick("speakers"), female=pick("female"), reps=pick("reps"),
                              seed=args.seed, sample_rate=args.sample_rate, max_seconds=float(pick("max_seconds")),
                              voices=_voice_list(args.voices))
    generate_corpus(args.out_dir, settings, jobs=args.jobs, progress=not args.no_progress)
    return 0


def _voice_list(text: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in text.split(",") if v.strip()) or None if text else None


def _voices(args: argparse.Namespace) -> int:
    from ..models.synth import GENDER_F0_THRESHOLD_HZ, available_voices, verify_voices

    voices = available_voices()
    if not voices:
        raise InputError("no speech synthesizer is installed (run scripts/install-speech-deps.sh)")
    print(f"{'voice':<16} {'expected':<8} {'F0 Hz':>7}  measured (threshold {GENDER_F0_THRESHOLD_HZ:g} Hz)")
    for check in verify_voices(voices):
        flag = "" if check.ok else "  <- left out"
        print(f"{check.name:<16} {check.gender:<8} {check.natural_f0_hz:>7.1f}  {check.measured_gender}{flag}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from ..audio.corpora import read_audiomnist, read_manifest, read_speaker_corpus

    manifest = read_manifest(args.corpus)
    kind = (manifest or {}).get("settings", {}).get("kind", "digits")
    utterances = read_speaker_corpus(args.corpus) if kind == "speaker" else read_audiomnist(args.corpus)
    print(f"{args.corpus}: {kind} corpus, {len(utterances)} utterances, {len({u.speaker for u in utterances})} speakers")
    for gender in ("female", "male"):
        own = [u for u in utterances if u.gender == gender]
        speakers = Counter(u.speaker for u in own)
        voices = sorted({u.base_voice for u in own if u.base_voice})
        line = f"  {gender}: {len(own)} utterances, {len(speakers)} speakers"
        print(line + (f", {len(voices)} base voices: {' '.join(voices)}" if voices else ""))
    return 0
