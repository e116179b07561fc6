"""Running lrp_onnx's corpus-wide work on a cluster: :mod:`lrp_onnx.scale.ray_engine` (Ray).

Needs the ``ray`` extra (``pip install 'lrp-onnx[ray]'``); nothing outside this package
imports ray, and importing this package does not import it either.
"""
