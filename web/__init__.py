"""The in-browser explainer: a static site that explains recordings on the user's own machine.

:func:`lrp_onnx.web.site.build_site` writes it (``lrp-onnx web MODEL -o SITE/``): the page
(``web/js/``: feature extraction in JavaScript equal to :mod:`lrp_onnx.audio.features`, the
heatmap drawing), the compiled explainer, and onnxruntime-web (WebGPU, else WebAssembly).
"""
