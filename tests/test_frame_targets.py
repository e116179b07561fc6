"""Per-frame outputs (voice activity per frame, token logits): a target is a frame and a class.

The explained output (N, T, C) is numbered in row-major order, score ``t * C + c``; T may be known
only at run time (one compiled explainer for every length)."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lrp_onnx.lrp_graph import compile_explainer
from lrp_onnx.lrp_graph.errors import InputError

W = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)


def frame_model(frames="T", flattened=False):
    """x (N, T, 4) -> MatMul W -> z (N, T, 3) -> Softmax over classes: a per-frame classifier. ``flattened``: the
    Softmax as onnx's version converter writes an old opset's Softmax(axis=2) whose input rank it does not know:
    Flatten(axis=2) to (N*T, 3), Softmax, Reshape back to Shape(z)."""
    if flattened:
        head = [helper.make_node("Shape", ["z"], ["z_shape"]), helper.make_node("Flatten", ["z"], ["rows"], axis=2),
                helper.make_node("Softmax", ["rows"], ["q"], axis=1), helper.make_node("Reshape", ["q", "z_shape"], ["p"])]
    else:
        head = [helper.make_node("Softmax", ["z"], ["p"], axis=-1)]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["z"]), *head], "frames",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", frames, 4])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", frames, 3])], [numpy_helper.from_array(W, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def reference(x, frame, cls):
    """Float64 LRP-0 of one (frame, class) score of a per-frame linear map: only that frame's inputs
    get relevance, ``R_i = x_i W_ic``."""
    r = np.zeros_like(x, dtype=np.float64)
    r[frame] = x[frame].astype(np.float64) * W[:, cls]
    return r


@pytest.mark.parametrize("frames", [5, 9, 1])
@pytest.mark.parametrize("flattened", [False, True])
def test_one_explainer_explains_any_frame_of_any_length(frames, flattened):
    """``flattened``: the Softmax's Flatten folds the frames into the batch; the compiler still strips it and
    explains z in its (N, T, C) layout."""
    compiled = compile_explainer(frame_model(flattened=flattened), "lrp0")
    assert compiled.plan.stripped == "Softmax(axis=-1)"
    session = ort.InferenceSession(compiled.model.SerializeToString())
    x = np.random.default_rng(frames).standard_normal((2, frames, 4)).astype(np.float32)
    positions = [(frames - 1, 1), (0, 2)]
    target = np.array([t * 3 + c for t, c in positions], np.int64)
    logits, targets, relevance = session.run(None, {"x": x, "target": target})
    assert logits.shape == (2, frames * 3)
    np.testing.assert_allclose(logits, (x @ W).reshape(2, -1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(targets, target)
    for i, (t, c) in enumerate(positions):
        np.testing.assert_allclose(relevance[i], reference(x[i], t, c), rtol=1e-5, atol=1e-6)


def test_predicted_target_is_the_best_frame_and_class():
    compiled = compile_explainer(frame_model(), "epsilon")
    session = ort.InferenceSession(compiled.model.SerializeToString())
    x = np.random.default_rng(3).standard_normal((3, 7, 4)).astype(np.float32)
    _, targets, _ = session.run(None, {"x": x, "target": np.full(3, -1, np.int64)})
    np.testing.assert_array_equal(targets, (x @ W).reshape(3, -1).argmax(axis=1))


def test_score_shape_is_recorded_with_the_run_time_axis_as_null():
    import json

    meta = {p.key: p.value for p in compile_explainer(frame_model(), "epsilon").model.metadata_props}
    assert json.loads(meta["lrp_onnx.explainer"])["score_shape"] == [None, 3]


def test_direction_needs_a_fixed_number_of_scores():
    with pytest.raises(InputError, match="fixed number of scores"):
        compile_explainer(frame_model(), "epsilon", direction=np.ones(3, np.float32))


def test_score_index_in_the_api(tmp_path):
    import onnx

    from lrp_onnx import Explainer

    path = tmp_path / "frames.onnx"
    onnx.save(frame_model(), path)
    explainer = Explainer(path, composite="lrp0", cache=False)
    assert explainer.num_classes is None and explainer.score_shape == (None, 3)
    assert explainer.score_index(4, 2) == 14
    x = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)  # one sample of 6 frames
    e = explainer.explain(x, target=explainer.score_index(4, 2))
    np.testing.assert_allclose(e.relevance, reference(x, 4, 2), rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="axis 2 is out of range"):
        explainer.score_index(0, 3)
    with pytest.raises(InputError, match="2 coordinates"):
        explainer.score_index(1)
    with pytest.raises(InputError, match="this input gives 18 scores"):
        explainer.explain(x, target=18)  # frame 6 of a 6-frame input


def test_frame_and_class_on_the_command_line(cli, tmp_path):
    import onnx

    onnx.save(frame_model(), tmp_path / "frames.onnx")
    x = np.random.default_rng(2).standard_normal((8, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    res = cli("explain", tmp_path / "frames.onnx", tmp_path / "x.npy", "--composite", "lrp0", "--target", "5,1",
              "-o", tmp_path / "r.npy", "--json")
    assert res.rc == 0, res.err
    assert json.loads(res.out.splitlines()[0])["target"] == 16
    np.testing.assert_allclose(np.load(tmp_path / "r.npy"), reference(x, 5, 1), rtol=1e-5, atol=1e-6)
    bad = cli("explain", tmp_path / "frames.onnx", tmp_path / "x.npy", "--target", "1,x")
    assert bad.rc == 2 and "frame,class" in bad.err and "Traceback" not in bad.err


def test_a_per_frame_softmax_gives_no_probabilities_over_the_flattened_scores(tmp_path):
    """The softmax the compiler strips normalises each frame; one softmax over all T * C scores would be
    wrong, so the scores do not read as probabilities (``runtime.scores``)."""
    import onnx

    from lrp_onnx import Explainer
    from lrp_onnx.runtime.scores import explainer_reading

    onnx.save(frame_model(), tmp_path / "frames.onnx")
    explainer = Explainer(tmp_path / "frames.onnx", cache=False)
    assert explainer.stripped == "Softmax(axis=-1)" and explainer_reading(explainer) is None
    with pytest.raises(InputError, match="depends on the input"):
        explainer.check_target(-2, 1)


def test_corpus_commands_take_a_per_frame_model(cli, tmp_path):
    import onnx

    onnx.save(frame_model(), tmp_path / "frames.onnx")
    rng = np.random.default_rng(4)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((4, 6, 4)).astype(np.float32), y=np.array([0, 5, 17, 2]))
    res = cli("batch", tmp_path / "frames.onnx", tmp_path / "d.npz", "-o", tmp_path / "out", "--target", "label")
    assert res.rc == 0, res.err
    bad = cli("batch", tmp_path / "frames.onnx", tmp_path / "d.npz", "-o", tmp_path / "out2", "--target", "foo")
    assert bad.rc == 2 and "depends on the input" in bad.err and "Traceback" not in bad.err
