"""The house rules of the source tree: packages declared once, imports pointing one way
(import-linter contracts in pyproject.toml), small modules and functions, relative imports
that a reader can follow to the file they name."""
import ast
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["lrp_graph", "audio", "runtime", "service", "study", "scale", "web", "models", "exporter", "cli"]
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 80
#: a docstring that contains this phrase may exceed the limits (it must say why)
EXEMPT = "longer than the house limit because"


def package_files():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py")) if (ROOT / package).is_dir() else ()
    yield ROOT / "__init__.py"


def test_pyproject_lists_every_package_folder():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"lrp_onnx": "."}
    folders = {"lrp_onnx"} | {
        "lrp_onnx." + ".".join(init.parent.relative_to(ROOT).parts)
        for package in PACKAGES if (ROOT / package).is_dir()
        for init in (ROOT / package).rglob("__init__.py")
    }
    assert set(config["packages"]) == folders


def test_import_contracts_hold():
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("import-linter is not installed (pip install -e '.[dev]')")
    proc = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "BROKEN" not in proc.stdout and "KEPT" in proc.stdout


def test_package_code_imports_the_project_relatively():
    offenders = []
    for path in package_files():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names if n.split(".")[0] == "lrp_onnx"]
    assert offenders == []


def test_modules_and_functions_are_small():
    too_long = []
    for path in package_files():
        text = path.read_text()
        tree = ast.parse(text)
        rel = path.relative_to(ROOT)
        if text.count("\n") > MAX_MODULE_LINES and EXEMPT not in (ast.get_docstring(tree) or ""):
            too_long.append(f"{rel}: {text.count(chr(10))} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES and EXEMPT not in (ast.get_docstring(node) or ""):
                    too_long.append(f"{rel}:{node.lineno} {node.name}(): {lines} lines")
    assert too_long == []


def test_version_and_entry_points():
    proc = subprocess.run([sys.executable, "-c", "import lrp_onnx; from lrp_onnx import Explainer, compile_explainer;"
                           " print(lrp_onnx.__version__)"], capture_output=True, text=True, cwd="/", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", proc.stdout.strip())
