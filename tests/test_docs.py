"""The documentation works as written: every Python block of the README runs (in order, in
one interpreter, beside the shipped model), the operator list matches the registry, and the
API reference builds from the docstrings."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_python_blocks_run_as_written(tmp_path):
    blocks = python_blocks(README)
    assert len(blocks) >= 3
    (tmp_path / "models").symlink_to(ROOT / "models")
    script = "\n".join(f"# --- README block {i}\n{block}" for i, block in enumerate(blocks))
    (tmp_path / "readme_blocks.py").write_text(script)
    proc = subprocess.run([sys.executable, "readme_blocks.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_readme_operator_list_is_the_registry():
    from lrp_onnx.lrp_graph import supported_ops

    section = README.split("## Supported operators", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`([A-Z][A-Za-z0-9]*)`", section))
    assert listed == set(supported_ops())


def test_api_reference_builds(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_api_docs.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (tmp_path / "lrp_onnx" / "runtime" / "explainer.html").read_text()
    assert "class Explainer" in page or "Explainer" in page
    assert (tmp_path / "lrp_onnx" / "lrp_graph" / "compiler.html").exists()
