"""``python -m lrp_onnx.cli``: the ``lrp-onnx`` command."""
import sys

from .main import main

sys.exit(main())
