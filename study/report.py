"""``OUT_DIR/report.md`` of ``lrp-onnx reproduce``: every number is read from the run's
results (``results.json``); only the study's own numbers (:data:`PAPER`) are constants."""
from __future__ import annotations

import math
from pathlib import Path

from ..runtime.io import write_text

#: What the study reports (Sarvaš, sections 4.2, 4.3 and 5; Table 1).
PAPER = {
    "alexnet_test_accuracy": 0.978,
    "alexnet_accuracy_0_5": 0.123,
    "augmented_accuracy_0": 0.987,
    "augmented_accuracy_0_5": 0.284,
    "resnet_accuracy": 0.96,
    "train_spectrograms": 6000,
    "test_spectrograms": 3000,
    "epochs": 200,
    "resnet_speakers": 5994,
}


def pct(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.{digits}f} %"


def num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def write_report(out: Path, results: dict) -> Path:
    path = Path(out) / "report.md"
    write_text(path, render(results))
    return path


def render(r: dict) -> str:
    lines: list[str] = []
    add = lines.append
    minutes = r["seconds_all_stages"] / 60
    add("# Reproducing *Interpretation of Deep Neural Networks in Speech Classification* with lrp-onnx")
    add("")
    add(f"Budget **{r['budget']['name']}**; all stages together took **{minutes:.1f} min** on "
        f"{r['machine']['cpus']} CPU cores ({r['machine']['platform']}, onnxruntime {r['machine']['onnxruntime']}). "
        "Every number in this report is read from `results.json` of this run (regenerate both with the command "
        "below); only the study's own numbers are constants.")
    add("")
    add("```")
    add(_command(r))
    add("```")
    add("")
    _data_section(add, r)
    _figure_sections(add, r)
    _augmentation_section(add, r)
    _closing_sections(add, r)
    return "\n".join(lines)


def _data_section(add, r: dict) -> None:
    g, s = r["gender"], r.get("speaker")
    add("## Data and models")
    add("")
    add(_corpus_line("Digits corpus (gender task)", g["corpus"]))
    add(f"Split by base voice (test voices are never heard in training): train {g['split']['train']}, "
        f"validation {g['split']['val']}, test {g['split']['test']} recordings; the pixel-flipping experiments use "
        f"{g['test_set']['samples']} test inputs ({_per_class(g['test_set'], ['male', 'female'])}). "
        f"The study: {PAPER['train_spectrograms']} training and {PAPER['test_spectrograms']} test spectrograms of "
        "real AudioMNIST speakers.")
    add("")
    add("| model | epochs (best) | validation accuracy | test accuracy | training time |")
    add("|---|---|---|---|---|")
    add(_model_row("gender AlexNet", g["train"]))
    add(_model_row("gender AlexNet, trained further on LRP-augmented data", g["augmented_train"]))
    add(_model_row("gender AlexNet, trained as long on the same data unchanged (control)", g["control_train"]))
    if s:
        add(_model_row(f"speaker-ID ResNet ({s['test_set']['per_class'].__len__()} speakers)", s["train"]))
    add("")
    add("Test accuracy is the training run's own evaluation on its whole test split; the 0 % points of the curves "
        "below are the same models on the subset used for flipping.")
    add("")


def _figure_sections(add, r: dict) -> None:
    g = r["gender"]
    flip = g["flip"]
    add("## Figures 1-2: what the gender model listens to (LRP-0)")
    add("")
    fig = g["figures"]
    for label in ("female", "male"):
        key = f"figure_1_2_{label}"
        if fig.get(key):
            add(f"![{label}]({fig[key]})")
            add("")
            add(f"A correctly classified {label} test recording ({fig[f'{key}_sample']}): heatmap alone (left) and over "
                f"the spectrogram (right). {pct(fig[f'{key}_low_frequency_share'], 0)} of its positive relevance lies "
                "below 1 kHz.")
            add("")
    for label, prof in fig.get("relevance_by_class", {}).items():
        add(f"- {label}: over {prof['inputs']} correctly classified test inputs, {pct(prof['below_1khz'], 0)} of "
            f"the positive relevance lies below 1 kHz; the {prof['top_band_hz'][0]:g}-{prof['top_band_hz'][1]:g} Hz "
            f"band holds the most ({pct(prof['top_band_share'], 0)}).")
    if fig.get("relevance_by_class"):
        add("")
    add("## Figures 3-4: pixel-flipping, LRP order against random")
    add("")
    add(f"![0-10 %]({fig['figure_3']}) ![0-1 %]({fig['figure_4']})")
    add("")
    add(f"Bins of each test spectrogram are set to 0 in the order of their relevance for the true class (LRP-0), "
        f"or in a random order (mean of {flip['curves']['random']['repeats']} seeds, band = one standard deviation). "
        "The area under each curve is its mean height over the range; the ratio LRP / random below 1 means the "
        "LRP order destroys the decision faster than chance.")
    add("")
    add(_auc_table([("AlexNet", flip)]))
    add("")
    add("## Figure 5: 0.5 % of the bins")
    add("")
    add(f"![flipped]({fig['figure_5']})")
    add("")
    add(f"{fig['figure_5_sample']}: its {fig['figure_5_bins']} most relevant bins (0.5 %) set to 0; the prediction "
        f"goes from {fig['figure_5_prediction_before']} to {fig['figure_5_prediction_after']}. Half of these bins lie "
        f"below {num(fig['figure_5_median_row_hz'], 0)} Hz.")
    add("")


def _augmentation_section(add, r: dict) -> None:
    g, s = r["gender"], r.get("speaker")
    flip, flip_aug, fig = g["flip"], g["flip_augmented"], g["figures"]
    add("## Table 1 and Figure 6: LRP-guided augmentation")
    add("")
    aug = g["augmentation"]
    add(f"Each of {aug['samples']} training spectrograms had its {aug['bins_per_sample']} most relevant bins "
        f"({pct(aug['fraction'])}) set to the mean of their Moore neighbourhood; the model was then trained "
        f"{_epochs(g['augmented_train'].get('epochs_run'))} more on them (Adam, lr 1e-4, best epoch by accuracy on "
        "the unchanged validation recordings). Not in the study: a **control** model was trained from the same "
        "model for exactly as long on the same spectrograms *unchanged*, so that the effect of the augmentation "
        "can be told apart from the effect of simply training longer. Each model is flipped in the order of its "
        "own relevance (the study's procedure) and, in the last column, at the bins the *original* model found "
        "most relevant (does the new model still need them?).")
    add("")
    t = g["table1"]
    add("| model | 0 % flipped | 0.5 % flipped (own relevance) | 0.5 % flipped (original model's bins) | "
        "study: 0 % | study: 0.5 % |")
    add("|---|---|---|---|---|---|")
    study = {"AlexNet": (PAPER["alexnet_test_accuracy"], PAPER["alexnet_accuracy_0_5"]),
             "AlexNet_augmented": (PAPER["augmented_accuracy_0"], PAPER["augmented_accuracy_0_5"])}
    for name in ("AlexNet", "AlexNet_control", "AlexNet_augmented"):
        row = t[name]
        ref = study.get(name)
        add(f"| {name} | {pct(row['0%'])} | {pct(row['0.5%'])} | {pct(row['0.5% original bins'])} | "
            f"{pct(ref[0]) if ref else '—'} | {pct(ref[1]) if ref else '—'} |")
    add("")
    add(f"![augmented]({fig['figure_6']})")
    add("")
    add(f"![original bins]({fig['figure_6b']})")
    add("")
    add(_auc_table([("AlexNet", flip), ("AlexNet augmented", flip_aug)]))
    add("")
    if s:
        _speaker_section(add, s)


def _closing_sections(add, r: dict) -> None:
    g, s = r["gender"], r.get("speaker")
    add("## Our numbers next to the study's")
    add("")
    add("| quantity | study | this run |")
    add("|---|---|---|")
    for row in _comparison(g, s):
        add("| " + " | ".join(row) + " |")
    add("")
    add("## Discussion")
    add("")
    for paragraph in discussion(r):
        add(paragraph)
        add("")
    if r.get("real_speech"):  # results of lrp_onnx.study.real_speech.evaluate, when the run had real speech
        from .real_speech import render as render_real_speech

        add(render_real_speech(r["real_speech"]))
    add("## Stage times")
    add("")
    add("Wall-clock seconds per stage (a cached stage keeps the time of the invocation that ran it; reused "
        "training runs count 0 here, their training time is in the table above). The machine may be shared "
        "with other jobs: the 1-minute load average at the end of each stage is shown where recorded.")
    add("")
    add("| stage | seconds | finished | load |")
    add("|---|---|---|---|")
    for name, st in r["stages"].items():
        load = st.get("load")
        add(f"| {name} | {st['seconds']} | {st['finished']} | {'n/a' if load is None else f'{load:.1f}'} |")
    add("")


def _command(r: dict) -> str:
    st = r["settings"]
    parts = ["lrp-onnx reproduce -o OUT_DIR", f"--budget {st['budget']}"]
    for key in ("data", "speaker_data", "gender_run", "speaker_run", "real_speech", "real_split"):
        if st.get(key):
            parts.append(f"--{key.replace('_', '-')} {st[key]}")
    if not st.get("data") and not st.get("gender_run"):
        parts.append("--synth")
    if st.get("skip_speaker"):
        parts.append("--skip-speaker")
    return " ".join(parts)


def _corpus_line(title: str, c: dict) -> str:
    origin = "synthesised offline by `lrp-onnx data synth`" if c.get("synthesised") else f"`{c.get('path')}`"
    if c.get("reused_run"):
        origin += f" (the corpus of the reused run `{c['reused_run']}`)"
    voices = (f" made from {c['base_voices']} synthesizer base voices" if c.get("base_voices") else "")
    return (f"{title}: {origin}: {c.get('utterances', '?')} recordings of {c.get('speakers', '?')} speakers "
            f"({c.get('female_utterances', '?')} female, {c.get('male_utterances', '?')} male recordings){voices}.")


def _per_class(test_set: dict, names: list[str]) -> str:
    return ", ".join(f"{n} {c}" for n, c in zip(names, test_set["per_class"]))


def _model_row(name: str, t: dict) -> str:
    seconds = t.get("train_seconds")
    time_text = f"{seconds / 60:.1f} min" if seconds is not None else "n/a"
    if t.get("reused"):
        time_text += " (reused run)"
    return (f"| {name} | {t.get('epochs', '?')} ({t.get('best_epoch', '?')}) | {pct(t.get('val_acc'))} | "
            f"{pct(t.get('test_acc'))} | {time_text} |")


def _auc_table(series: list[tuple[str, dict]]) -> str:
    rows = ["| model | range | AUC, LRP order | AUC, random (mean +- std) | ratio LRP / random |", "|---|---|---|---|---|"]
    for name, f in series:
        order = f["config"]["order"]
        for key in ("0-10", "0-1"):
            if key not in f["auc_ranges"]:
                continue
            rnd = f["curves"]["random"]
            rows.append(f"| {name} | {key} % | {num(f['curves'][order]['auc'][key])} | {num(rnd['auc'][key])} +- "
                        f"{num(rnd['auc_std'][key])} | **{num(f['ratio'][key])}** |")
    return "\n".join(rows)


def _speaker_section(add, s: dict) -> None:
    fig = s["figures"]
    add("## Figures 7-12: the ResNet speaker-ID model")
    add("")
    add(_corpus_line("Speaker-ID corpus", s["corpus"]))
    add(f"Held-out utterances of every speaker: train {s['split']['train']}, validation {s['split']['val']}, "
        f"test {s['split']['test']}; {s['test_set']['samples']} test inputs are explained and flipped.")
    add("")
    add(f"![features]({fig['figure_7']})")
    add("")
    names = {"8": "LRP-0", "9": "LRP-0 near the output, LRP-epsilon (0.5) on the convolutions and the input layer",
             "11": "as Figure 9, plus LRP-gamma (5) on the third of the hidden convolutions nearest the input"}
    for number in ("8", "9", "11"):
        add(f"**Figure {number}**: {names[number]}. Positive share of the relevance "
            f"{pct(fig[f'figure_{number}_positive_share'], 0)}; neighbouring bins of opposite sign "
            f"{pct(fig[f'figure_{number}_sign_changes'], 0)}.")
        add("")
        add(f"![fig{number}]({fig[f'figure_{number}']})")
        add("")
    add(f"![fig10]({fig['figure_10']}) ![fig12]({fig['figure_12']})")
    add("")
    add(f"![all]({fig['figure_10_12_all']})")
    add("")
    add(_auc_table([(f"ResNet, {k}", v) for k, v in s["flip"].items()]))
    add("")


def _comparison(g: dict, s: dict | None) -> list[list[str]]:
    flip, aug = g["flip"], g["flip_augmented"]
    rows = [
        ["gender AlexNet test accuracy", pct(PAPER["alexnet_test_accuracy"]), pct(g["train"].get("test_acc"))],
        ["accuracy with 0.5 % of the bins zeroed (LRP order)", pct(PAPER["alexnet_accuracy_0_5"]),
         pct(flip["accuracy_0_5"])],
        ["the same, random order", "above the LRP curve (Figures 3-4)", pct(flip["random_accuracy_0_5"])],
        ["LRP / random AUC, 0-10 %", "below 1 (figure only)", num((flip.get("ratio") or {}).get("0-10"))],
        ["LRP / random AUC, 0-1 %", "below 1 (figure only)", num((flip.get("ratio") or {}).get("0-1"))],
        ["augmented model, 0 % flipped", pct(PAPER["augmented_accuracy_0"]), pct(aug["accuracy_0"])],
        ["augmented model, 0.5 % flipped (own relevance)", pct(PAPER["augmented_accuracy_0_5"]),
         pct(aug["accuracy_0_5"])],
        ["augmented model, 0.5 % flipped at the original model's bins", "—",
         pct(g["flip_augmented_original_bins"]["accuracy_0_5"])],
        ["change at 0 % through augmentation", _pp(PAPER["augmented_accuracy_0"] - PAPER["alexnet_test_accuracy"]),
         _pp(_diff(aug["accuracy_0"], flip["accuracy_0"]))],
        ["change at 0.5 % through augmentation (own relevance)",
         _pp(PAPER["augmented_accuracy_0_5"] - PAPER["alexnet_accuracy_0_5"]),
         _pp(_diff(aug["accuracy_0_5"], flip["accuracy_0_5"]))],
        ["the same for the control (training as long on unchanged inputs)", "—",
         _pp(_diff(g["flip_control"]["accuracy_0_5"], flip["accuracy_0_5"]))],
    ]
    if s:
        f = s["flip"]
        rows += [
            ["speaker-ID ResNet accuracy", f"{pct(PAPER['resnet_accuracy'], 0)} ({PAPER['resnet_speakers']} VoxCeleb speakers)",
             f"{pct(s['train'].get('test_acc'))} ({len(s['test_set']['per_class'])} synthetic speakers)"],
            ["ResNet LRP / random AUC 0-10 %: LRP-0, epsilon, epsilon + gamma", "(figures only)",
             ", ".join(num((f[k].get("ratio") or {}).get("0-10")) for k in ("lrp0", "epsilon", "epsilon-gamma"))],
            ["ResNet: with gamma the accuracy falls less steeply than with epsilon only", "yes (Figure 12 vs 10)",
             _yes_no(_auc(f["epsilon-gamma"]) > _auc(f["epsilon"]))],
        ]
    return rows


def _auc(flip: dict, key: str = "0-10") -> float:
    return flip["curves"][flip["config"]["order"]]["auc"].get(key, flip["curves"][flip["config"]["order"]]["auc"]["all"])


def _diff(a, b):
    return None if a is None or b is None else a - b


def _pp(value) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f} points"


def _se_diff(a: float, b: float, n: int) -> float:
    """Standard error of the difference of two accuracies on ``n`` inputs (binomial, independent)."""
    return math.sqrt((a * (1 - a) + b * (1 - b)) / max(n, 1))


def _epochs(n) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}" if n is not None else "? epochs"


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def discussion(r: dict) -> list[str]:
    """Paragraphs that say, from the numbers, where this run agrees with the study and where not."""
    g, s = r["gender"], r.get("speaker")
    flip = g["flip"]
    out = []
    test_acc = g["train"].get("test_acc")
    out.append(
        f"**Data.** The study trained on real AudioMNIST speakers for {PAPER['epochs']} epochs; this run uses an "
        f"offline corpus of synthetic voices ({g['corpus'].get('base_voices', '?')} base voices, test voices held out) "
        f"and {_epochs(g['train'].get('epochs'))} (budget {r['budget']['name']}). Its AlexNet reaches "
        f"{pct(test_acc)} on unheard voices against the study's {pct(PAPER['alexnet_test_accuracy'])}"
        + (" — close to it." if test_acc is not None and test_acc >= 0.95 else
           " — lower: with few voices and synthetic speech the model generalises less well, so all later "
           "numbers start from a weaker model.") )
    chance = 0.5  # two classes
    if flip["accuracy_0"] is not None and flip["accuracy_0"] <= chance + 0.1:
        out.append(f"**Caution.** On the flipping subset this AlexNet is at chance level ({pct(flip['accuracy_0'])} "
                   "correct before any bin is removed), so the pixel-flipping and augmentation numbers below "
                   "cannot say anything about faithfulness or robustness; a longer budget is needed.")
    profile = g["figures"].get("relevance_by_class", {})
    if len(profile) == 2:
        low = {k: v["below_1khz"] for k, v in profile.items()}
        text = ("**Where the evidence lies.** The study found low frequencies carrying the gender decision. Here "
                + "; ".join(f"{pct(v, 0)} of the positive relevance for {k} recordings lies below 1 kHz (most in "
                            f"{profile[k]['top_band_hz'][0]:g}-{profile[k]['top_band_hz'][1]:g} Hz)"
                            for k, v in low.items()) + ". ")
        if min(low.values()) < 0.3:
            odd = min(low, key=low.get)
            text += (f"The {odd} decision rests mostly on higher frequencies, far above any voice's fundamental: "
                     "probably a property of the synthetic corpus (the synthesizers' and simulated microphones' "
                     "spectra) rather than of voices — the kind of shortcut these heatmaps exist to expose.")
        else:
            text += "Both agree with the study."
        out.append(text)
    ratio = (flip.get("ratio") or {}).get("0-10")
    faithful = ratio is not None and ratio < 1
    out.append(
        f"**Faithfulness.** Over 0-10 % the LRP curve's area is {num(ratio)} times the random curve's"
        + (", so ranking bins by LRP relevance finds the bins the model needs far faster than chance, as in the "
           "study's Figures 3-4." if faithful else
           ": LRP's order is *not* better than random here, unlike the study; the explanation of this model is "
           "not faithful by this test.")
        + f" At 0.5 % the accuracy is {pct(flip['accuracy_0_5'])} (LRP order) against "
          f"{pct(flip['random_accuracy_0_5'])} (random); the study reports {pct(PAPER['alexnet_accuracy_0_5'])} "
          "for the LRP order.")
    a05 = flip["accuracy_0_5"]
    if a05 is not None:
        if a05 < 0.5:
            text = ("Like the study, the accuracy falls below chance: removing the bins that speak *for* the true "
                    "class leaves those that speak against it, and the model flips to the other gender.")
        elif a05 < flip["accuracy_0"] - 0.1:
            text = ("The drop is smaller than the study's: this model leans on a handful of bins less than the "
                    "study's did.")
        else:
            text = "0.5 % of the bins hardly matter to this model, unlike the study's."
        out.append(text + " Note what 'zeroing' means here, as in the study: the spectrograms are in dB relative to "
                   "their maximum, so 0 is the *loudest* possible value, not silence; flipped bins become loud "
                   "peaks rather than holes (the `--baseline moore` and `mean` options of `lrp-onnx flip` test "
                   "softer removals).")
    augmentation = _augmentation_paragraph(g)
    if augmentation is not None:
        out.append(augmentation)
    if s:
        out.append(_resnet_paragraph(s))
    out.append("**Limits.** Synthetic voices differ from real speakers mostly in pitch and formant scale, so a "
               "gender model can succeed on cues that real recordings do not share; the corpora, epoch counts "
               "and test subsets are smaller than the study's (see above), so single numbers carry a few points "
               "of sampling noise (the random curves' spread shows how much).")
    return out


def _augmentation_paragraph(g: dict) -> str | None:
    """The augmentation paragraph of the discussion (None without both accuracies)."""
    flip, aug = g["flip"], g["flip_augmented"]
    text = None
    ctl, aug_t, ctl_t = g["flip_control"], g["flip_augmented_original_bins"], g["flip_control_original_bins"]
    d0, d05 = _diff(aug["accuracy_0"], flip["accuracy_0"]), _diff(aug["accuracy_0_5"], flip["accuracy_0_5"])
    if d0 is not None and d05 is not None:
        rises, keeps = d05 > 0, d0 >= -0.01
        beyond_control = _diff(aug["accuracy_0_5"], ctl["accuracy_0_5"])
        text = (f"**Augmentation.** Training further on spectrograms whose 0.5 % most relevant bins were blurred "
                f"changes the accuracy at 0.5 % flipped (each model in the order of its own relevance, as the "
                f"study) by {_pp(d05)} ({pct(flip['accuracy_0_5'])} to {pct(aug['accuracy_0_5'])}; the study: "
                f"{pct(PAPER['alexnet_accuracy_0_5'])} to {pct(PAPER['augmented_accuracy_0_5'])}) and on unmodified "
                f"inputs by {_pp(d0)} (the study: "
                f"{_pp(PAPER['augmented_accuracy_0'] - PAPER['alexnet_test_accuracy'])}). ")
        n = flip.get("samples") or 1
        se = _se_diff(flip["accuracy_0_5"], aug["accuracy_0_5"], n)
        noise = abs(d05) < 2 * se
        if rises and keeps:
            text += ("Both changes go the study's way" + (", though the gain at 0.5 % is much smaller than the "
                     "study's" if d05 < 0.5 * (PAPER["augmented_accuracy_0_5"] - PAPER["alexnet_accuracy_0_5"])
                     else "") + ". ")
        elif rises:
            text += "The robustness gain is reproduced, but clean accuracy drops by more than 1 point. "
        else:
            text += ("The study's robustness gain is *not* reproduced: the augmented model is at least as easy to "
                     "break at its own most relevant bins as the model it started from. ")
        text += (f"On {n} test inputs one standard error of such a difference is about {100 * se:.1f} points, so "
                 + ("this 0.5 % change is within sampling noise. " if noise else "this 0.5 % change is beyond "
                    "sampling noise. "))
        text += (f"The control model, trained as long on the same inputs unchanged, ends at {pct(ctl['accuracy_0'])} "
                 f"(0 %) and {pct(ctl['accuracy_0_5'])} (0.5 %): so {_pp(_diff(ctl['accuracy_0'], flip['accuracy_0']))} "
                 "of the clean-accuracy change comes from training longer, not from the augmentation, and training "
                 "longer alone makes the model " + ("*more* fragile at its most relevant bins" if
                                                    ctl["accuracy_0_5"] < flip["accuracy_0_5"] else
                                                    "no more fragile at its most relevant bins")
                 + f"; against this control the augmented model differs by {_pp(beyond_control)} at 0.5 % "
                 f"(one standard error: {100 * _se_diff(aug['accuracy_0_5'], ctl['accuracy_0_5'], n):.1f} points) — "
                 "the part due to the augmentation itself. ")
        if aug_t["accuracy_0_5"] is not None and ctl_t["accuracy_0_5"] is not None:
            gain = aug_t["accuracy_0_5"] - ctl_t["accuracy_0_5"]
            text += (f"At the bins the *original* model relied on, the augmented model keeps "
                     f"{pct(aug_t['accuracy_0_5'])} against the control's {pct(ctl_t['accuracy_0_5'])} and the "
                     f"original's {pct(flip['accuracy_0_5'])}: "
                     + ("it has become somewhat less dependent on those particular bins, but is far from independent "
                        "of them (its clean accuracy is "
                        f"{pct(aug['accuracy_0'])})." if gain > 2 * _se_diff(aug_t['accuracy_0_5'],
                                                                                ctl_t['accuracy_0_5'], n)
                        else "it is not measurably less dependent on them than the control."))
        pass
    return text


def _resnet_paragraph(s: dict) -> str:
    """The speaker-ID ResNet paragraph of the discussion."""
    f = s["flip"]
    ratios = {k: (f[k].get("ratio") or {}).get("0-10") for k in f}
    fig = s["figures"]
    noisier = fig.get("figure_8_sign_changes", 0) > fig.get("figure_9_sign_changes", 0)
    steeper = _auc(f["epsilon-gamma"]) > _auc(f["epsilon"])
    return (
        f"**ResNet.** The study explained a VoxCeleb model with {PAPER['resnet_speakers']} speakers; ours "
        f"tells {len(s['test_set']['per_class'])} synthetic speakers apart ({pct(s['train'].get('test_acc'))} on "
        f"held-out utterances). LRP-0's heatmap has {pct(fig.get('figure_8_sign_changes'), 0)} of neighbouring "
        f"bins with opposite signs against {pct(fig.get('figure_9_sign_changes'), 0)} with epsilon"
        + (" — noisier, as the study found." if noisier else " — not noisier here, unlike the study.")
        + f" The LRP/random AUC ratios over 0-10 % are {num(ratios.get('lrp0'))} (LRP-0), "
          f"{num(ratios.get('epsilon'))} (epsilon) and {num(ratios.get('epsilon-gamma'))} (epsilon + gamma); "
        + ("with gamma the curve falls less steeply than with epsilon alone, as in the study's Figures 10 and 12."
           if steeper else "unlike the study, adding gamma does not make the curve fall less steeply."))

