"""Classic CNNs in the forms of opsets 7 to 9, written with onnx.helper, random weights: the constructs of the
Caffe2 / early-converter era (LRN, variadic Sum, Upsample with a scales input, Flatten + Gemm, Dropout)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _model(nodes, weights: dict, x_shape, y_shape, opset: int, name: str) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in weights.items()]
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("data", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, y_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="hand-built")
    model.ir_version = 4
    onnx.checker.check_model(model, full_check=True)
    return model


def _w(rng, *shape):
    return rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))


def vgg_lrn(opset: int = 7) -> onnx.ModelProto:
    """AlexNet/VGG style: Conv -> Relu -> LRN -> MaxPool, twice; Flatten -> Gemm -> Relu -> Dropout -> Gemm -> Softmax."""
    rng = np.random.default_rng(7)
    n = helper.make_node
    nodes = [n("Conv", ["data", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), n("Relu", ["c1"], ["r1"]),
             n("LRN", ["r1"], ["n1"], size=5, alpha=1e-4, beta=0.75, bias=1.0),
             n("MaxPool", ["n1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             n("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]), n("Relu", ["c2"], ["r2"]),
             n("LRN", ["r2"], ["n2"], size=3),
             n("MaxPool", ["n2"], ["p2"], kernel_shape=[3, 3], strides=[2, 2]),
             n("Flatten", ["p2"], ["f"], axis=1), n("Gemm", ["f", "w3", "b3"], ["g1"], transB=1),
             n("Relu", ["g1"], ["r3"]), n("Dropout", ["r3"], ["d"], ratio=0.5),
             n("Gemm", ["d", "w4", "b4"], ["g2"], transB=1), n("Softmax", ["g2"], ["prob"])]
    weights = {"w1": _w(rng, 8, 3, 3, 3), "b1": 0.1 * rng.standard_normal(8), "w2": _w(rng, 16, 8, 3, 3),
               "b2": 0.1 * rng.standard_normal(16), "w3": _w(rng, 32, 16 * 7 * 7), "b3": np.zeros(32),
               "w4": _w(rng, 10, 32), "b4": np.zeros(10)}
    return _model(nodes, weights, ["N", 3, 32, 32], ["N", 10], opset, "vgg_lrn")


def squeezenet(opset: int = 8) -> onnx.ModelProto:
    """SqueezeNet 1.0 style: Conv s2 -> MaxPool 3/2 -> Fire (squeeze 1x1, expand 1x1 | 3x3, Concat) x2 ->
    Conv 1x1 to the classes -> Relu -> GlobalAveragePool -> Flatten -> Softmax."""
    rng = np.random.default_rng(8)
    n = helper.make_node
    nodes = [n("Conv", ["data", "w0"], ["c0"], strides=[2, 2]), n("Relu", ["c0"], ["r0"]),
             n("MaxPool", ["r0"], ["p0"], kernel_shape=[3, 3], strides=[2, 2])]
    weights = {"w0": _w(rng, 16, 3, 3, 3)}
    x, channels = "p0", 16
    for k in range(2):
        nodes += [n("Conv", [x, f"s{k}"], [f"sq{k}"]), n("Relu", [f"sq{k}"], [f"sr{k}"]),
                  n("Conv", [f"sr{k}", f"e1_{k}"], [f"a{k}"]), n("Relu", [f"a{k}"], [f"ar{k}"]),
                  n("Conv", [f"sr{k}", f"e3_{k}"], [f"b{k}"], pads=[1, 1, 1, 1]), n("Relu", [f"b{k}"], [f"br{k}"]),
                  n("Concat", [f"ar{k}", f"br{k}"], [f"fire{k}"], axis=1)]
        weights.update({f"s{k}": _w(rng, 8, channels, 1, 1), f"e1_{k}": _w(rng, 16, 8, 1, 1),
                        f"e3_{k}": _w(rng, 16, 8, 3, 3)})
        x, channels = f"fire{k}", 32
    nodes += [n("Conv", [x, "w9", "b9"], ["c9"]), n("Relu", ["c9"], ["r9"]), n("GlobalAveragePool", ["r9"], ["gap"]),
              n("Flatten", ["gap"], ["f"]), n("Softmax", ["f"], ["prob"])]
    weights.update({"w9": _w(rng, 10, 32, 1, 1), "b9": 0.1 * np.abs(rng.standard_normal(10))})
    return _model(nodes, weights, ["N", 3, 33, 33], ["N", 10], opset, "squeezenet")


def resnet_sum_upsample(opset: int = 9) -> onnx.ModelProto:
    """Caffe2-zoo ResNet style: Conv -> BatchNormalization -> Relu; a residual block closed by a variadic
    ``Sum`` of three branches; ``Upsample`` (scales input, nearest) -> Conv; GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(9)
    n = helper.make_node
    bn = lambda c, k: {f"{k}_s": 1 + 0.1 * rng.standard_normal(c), f"{k}_b": 0.1 * rng.standard_normal(c),
                       f"{k}_m": 0.1 * rng.standard_normal(c), f"{k}_v": 1 + 0.1 * np.abs(rng.standard_normal(c))}
    norm = lambda x, k, y: n("BatchNormalization", [x, f"{k}_s", f"{k}_b", f"{k}_m", f"{k}_v"], [y])
    nodes = [n("Conv", ["data", "w0"], ["c0"], pads=[1, 1, 1, 1]), norm("c0", "bn0", "n0"), n("Relu", ["n0"], ["r0"]),
             n("Conv", ["r0", "w1"], ["c1"], pads=[1, 1, 1, 1]), norm("c1", "bn1", "n1"), n("Relu", ["n1"], ["r1"]),
             n("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]), norm("c2", "bn2", "n2"),
             n("Conv", ["r0", "w3"], ["c3"]),
             n("Sum", ["n2", "c3", "r0"], ["s"]), n("Relu", ["s"], ["rs"]),
             n("Upsample", ["rs", "scales"], ["up"], mode="nearest"),
             n("Conv", ["up", "w4", "b4"], ["c4"], strides=[2, 2], pads=[1, 1, 1, 1]), n("Relu", ["c4"], ["r4"]),
             n("GlobalAveragePool", ["r4"], ["gap"]), n("Flatten", ["gap"], ["f"]),
             n("Gemm", ["f", "w5", "b5"], ["logits"], transB=1), n("Softmax", ["logits"], ["prob"])]
    weights = {"w0": _w(rng, 8, 3, 3, 3), "w1": _w(rng, 8, 8, 3, 3), "w2": _w(rng, 8, 8, 3, 3),
               "w3": _w(rng, 8, 8, 1, 1), "w4": _w(rng, 16, 8, 3, 3), "b4": 0.1 * rng.standard_normal(16),
               "w5": _w(rng, 10, 16), "b5": np.zeros(10), "scales": np.array([1, 1, 2, 2]),
               **bn(8, "bn0"), **bn(8, "bn1"), **bn(8, "bn2")}
    return _model(nodes, weights, ["N", 3, 16, 16], ["N", 10], opset, "resnet_sum_upsample")
