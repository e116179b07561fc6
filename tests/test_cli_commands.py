"""One module registers every sub-command, in one style: the table in ``lrp_onnx.cli.main``; each
command module has ``add_arguments`` and ``run`` and a docstring whose example ``--help`` shows;
a command imports only its own module; every command that writes takes ``-o/--output``."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

cli_main = importlib.import_module("lrp_onnx.cli.main")

REPO = Path(cli_main.__file__).resolve().parents[1]
HELPERS = {"__init__", "__main__", "main", "options"}  # cli modules that are not commands
AVAILABLE = cli_main.available_commands()


def help_text(cli, command: str) -> str:
    res = cli(command, "--help")
    assert res.rc == 0, res.err
    return res.out


def examples(text: str, command: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith(f"lrp-onnx {command}")]


@pytest.mark.parametrize("command", [row[0] for row in AVAILABLE])
def test_every_command_help_shows_an_example(cli, command):
    text = help_text(cli, command)
    assert examples(text, command), f"`lrp-onnx {command} --help` shows no line starting 'lrp-onnx {command}'"
    assert "examples:" in text or "example:" in text


def test_every_command_module_is_in_the_table_and_has_the_two_functions():
    modules = {p.stem for p in (REPO / "cli").glob("*.py")} - HELPERS
    table = {row[1] for row in cli_main.COMMANDS}
    assert modules <= table, f"command modules missing from cli.main.COMMANDS: {sorted(modules - table)}"
    for name, module_name, help_line in AVAILABLE:
        module = importlib.import_module(f"lrp_onnx.cli.{module_name}")
        assert callable(module.add_arguments) and callable(module.run), name
        assert not hasattr(module, "add_parser") and not hasattr(module, "add_parsers"), name
        assert help_line and "\n" not in help_line
        assert "\nexamples:\n" in (module.__doc__ or ""), f"{module_name}: docstring has no examples: section"
    assert {row[0] for row in cli_main.COMMANDS} >= {"batch", "web", "explain", "train", "augment", "reproduce"}


def test_rows_whose_module_is_missing_are_left_out(monkeypatch, capsys):
    monkeypatch.setattr(cli_main, "COMMANDS", cli_main.COMMANDS + [("ghost", "no_such_command_module", "absent")])
    with pytest.raises(SystemExit):
        cli_main.main(["--help"])
    out = capsys.readouterr().out
    assert "explain" in out and "ghost" not in out


def test_top_level_help_lists_every_available_command(cli):
    res = cli("--help")
    assert res.rc == 0
    for name, _, help_line in AVAILABLE:
        assert name in res.out


def test_a_command_imports_only_its_own_module(tmp_path, tiny_cnn, tiny_input):
    np.save(tmp_path / "x.npy", tiny_input)
    script = f"""
import sys
from lrp_onnx.cli.main import main
assert main(["explain", {str(tiny_cnn)!r}, {str(tmp_path / 'x.npy')!r}]) == 0
loaded = sorted(m for m in sys.modules if m.startswith("lrp_onnx.cli."))
print("loaded", loaded)
print("heavy", [m for m in ("torch", "lrp_onnx.models", "lrp_onnx.service.app", "fastapi") if m in sys.modules])
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = eval(proc.stdout.split("loaded ", 1)[1].splitlines()[0])
    assert set(loaded) == {"lrp_onnx.cli.main", "lrp_onnx.cli.options", "lrp_onnx.cli.explain"}, loaded
    assert "heavy []" in proc.stdout


@pytest.mark.parametrize("command, argv, dest", [
    ("explain", ["m.onnx", "x.npy"], "output"),
    ("compile", ["m.onnx"], "output"),
    ("flip", ["m.onnx", "d.npz"], "output"),
    ("augment", ["m.onnx", "d.npz"], "output"),
    ("train", ["alexnet", "--data", "d.npz", "--task", "gender"], "out"),
    ("export", ["runs/x"], "output"),
    ("reproduce", [], "out_dir"),
    ("data", ["synth"], "out_dir"),
])
def test_every_writing_command_takes_dash_o(command, argv, dest):
    args = cli_main.build_parser(command).parse_args([command, *argv, "-o", "OUT"])
    assert str(getattr(args, dest)) == "OUT"
    args = cli_main.build_parser(command).parse_args([command, *argv, "--output", "OUT"])
    assert str(getattr(args, dest)) == "OUT"


def test_old_spellings_still_work_and_are_hidden(capsys):
    parser = cli_main.build_parser("train")
    args = parser.parse_args(["train", "alexnet", "--data", "d.npz", "--task", "gender", "--out", "RUN"])
    assert args.out == "RUN"
    assert "deprecated" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    assert "--out " not in capsys.readouterr().out  # hidden: -o/--output is the documented spelling
    assert cli_main.build_parser("reproduce").parse_args(["reproduce", "OLD"]).legacy_out_dir == "OLD"
    assert str(cli_main.build_parser("data").parse_args(["data", "synth", "OLD"]).legacy_out_dir) == "OLD"


def test_train_without_output_is_one_line_error(cli):
    res = cli("train", "alexnet", "--data", "d.npz", "--task", "gender")
    assert res.rc == 2 and res.err.strip().splitlines() == [res.err.strip()]
    assert res.err.startswith("lrp-onnx: error: ") and "-o" in res.err


@pytest.mark.parametrize("command", ["explain", "check", "compile"])
def test_the_first_help_example_works_as_written(cli, tmp_path, command, monkeypatch):
    """The example ``--help`` shows first, run in a folder where the shipped model is at models/."""
    shipped = REPO / "models" / "gender_alexnet.onnx"
    if not shipped.exists():
        pytest.skip("the shipped model is not in this checkout")
    os.symlink(REPO / "models", tmp_path / "models")
    monkeypatch.chdir(tmp_path)
    line = examples(help_text(cli, command), command)[0]
    argv = line.split()[1:]
    res = cli(*argv)
    assert res.rc == 0, (line, res.err)
    if command == "explain":
        assert "predicted" in res.out and (tmp_path / "heatmap.png").stat().st_size > 1000
    if command == "compile":
        assert (tmp_path / "gender_explainer.onnx").exists()
    if command == "check":
        assert "composite:" in res.out


def test_model_metadata_gives_the_default_composite_everywhere(cli, tmp_path, build_model):
    """explain (Explainer), check and compile (the model file) choose the same default composite."""
    import onnx
    from test_cli import labelled_gemm  # a model whose metadata recommends lrp0

    path = tmp_path / "m.onnx"
    onnx.save(labelled_gemm(build_model), str(path))
    np.save(tmp_path / "x.npy", np.ones((8, 8), np.float32))
    assert json.loads(cli("check", path, "--json").out)["composite"] == "lrp0"
    assert "composite lrp0" in cli("compile", path, "-o", tmp_path / "e.onnx").out
    res = cli("explain", path, tmp_path / "x.npy", "--json", "--target", "1")
    assert res.rc == 0, res.err
    row = json.loads(res.out)
    assert row["relevance_sum"] == pytest.approx(row["target_logit"])  # LRP-0 conserves exactly here
