"""Build the API reference (HTML, from the docstrings) with pdoc.

    python scripts/build_api_docs.py [OUTPUT_DIR]        # default: site/api

Every module of the installed package is documented, except the command line (cli:
see ``lrp-onnx COMMAND --help``).
"""
import pkgutil
import sys
from pathlib import Path

import pdoc

import lrp_onnx

SKIP = ("lrp_onnx.cli",)


def modules() -> list[str]:
    names = ["lrp_onnx"] + [m.name for m in pkgutil.walk_packages(lrp_onnx.__path__, "lrp_onnx.")]
    return [n for n in names if not n.startswith(SKIP)]


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "site/api")
    pdoc.render.configure(docformat="restructuredtext", footer_text=f"lrp-onnx {lrp_onnx.__version__}")
    pdoc.pdoc(*modules(), output_directory=out)
    print(f"API reference: {out / 'index.html'} ({len(modules())} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
