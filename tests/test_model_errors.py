"""Per-request errors in every Python model: one bad request among those Triton hands to one
execute() gets its own error response, and the others are answered as if alone. The models are
the repository's real model.py files on real ONNX files and banks; only the stub-injected
triton_python_backend_utils is stood in for (tests/pb_utils_standin.py), because a client of a
real server cannot choose which requests share an execution."""
import io

import numpy as np
import pytest
from PIL import Image

import pb_utils_standin as pb
from export.triton_repo import score_params
from qfm_core import io_names


@pytest.fixture(scope="module")
def models(fast_repo):
    student = pb.load(fast_repo / io_names.STUDENT_MODEL / "1", io_names.STUDENT_MODEL,
                      {"parameters": {"onnx_file": {"string_value": "model.onnx"},
                                      "intra_op_threads": {"string_value": "1"}}})
    params = {**score_params("cpu-pip"), "chunk_crops": 4}   # several chunks per request
    score = pb.load(fast_repo / io_names.SCORE_MODEL / "1", io_names.SCORE_MODEL,
                    {"parameters": {k: {"string_value": str(v)} for k, v in params.items()},
                     "output": [{"name": io_names.EMBEDDING, "dims": [-1, 384]}]})
    match = pb.load(fast_repo / io_names.MATCH_MODEL / "1", io_names.MATCH_MODEL,
                    {"parameters": {"onnx_file": {"string_value": "match.onnx"},
                                    "bank_file": {"string_value": "bank.safetensors"}}})
    return student, score, match


def _outputs(response, *names):
    assert not response.has_error(), response.error().message()
    return [pb.get_output_tensor_by_name(response, n).as_numpy() for n in names]


def test_student_answers_each_request(models):
    student = models[0]
    rng = np.random.default_rng(0)
    a, c = (rng.integers(0, 255, (n, 3, 224, 224), dtype=np.uint8) for n in (2, 3))
    bad = np.zeros((2, 3, 100, 100), np.uint8)
    out = pb.execute(student, [pb.Request(**{io_names.CROPS: a}), pb.Request(**{io_names.CROPS: bad}),
                               pb.Request(**{io_names.CROPS: c})])
    assert out[1].has_error() and out[1].error().code == pb.TritonError.INVALID_ARG
    assert "must be [batch, 3, 224, 224]" in out[1].error().message()
    for x, response in ((a, out[0]), (c, out[2])):
        alone = pb.execute(student, [pb.Request(**{io_names.CROPS: x})])[0]
        got, want = _outputs(response, io_names.CROP_SCORES)[0], _outputs(alone, io_names.CROP_SCORES)[0]
        assert got.shape == (len(x), 1)
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_score_model_answers_each_request(models, livec_dev):
    score = models[1]
    photos = [(livec_dev / "images" / n).read_bytes() for n in ("100.png", "1001.JPG", "1003.JPG", "105.png")]
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 9, np.uint8)).save(buf, format="PNG")
    blobs = lambda items: {io_names.IMAGE: np.array(items, dtype=object)}   # noqa: E731
    out = pb.execute(score, [pb.Request(**blobs(photos[:3] + [b"not an image"])),
                             pb.Request(**blobs([buf.getvalue()] * 513)),
                             pb.Request(),                                  # no IMAGE tensor at all
                             pb.Request(**blobs(photos * 2))])
    assert [r.has_error() for r in out] == [False, True, True, False]
    assert out[1].error().code == pb.TritonError.INVALID_ARG and "at most 512" in out[1].error().message()
    assert out[2].error().code == pb.TritonError.INTERNAL
    s0, e0 = _outputs(out[0], io_names.SCORE, io_names.ITEM_ERROR)
    assert np.isfinite(s0[:3]).all() and np.isnan(s0[3]) and e0[3].decode().startswith("UNSUPPORTED_FORMAT")
    s3, emb3 = _outputs(out[3], io_names.SCORE, io_names.EMBEDDING)
    np.testing.assert_allclose(s3[:3], s0[:3], atol=1e-4)   # the same images, other chunks, same scores
    np.testing.assert_allclose(s3[:4], s3[4:], atol=1e-4)
    assert emb3.shape == (8, 384)


def test_match_model_answers_each_request(models):
    match = models[2]
    q = np.random.default_rng(1).normal(size=(2, 384)).astype(np.float32)
    out = pb.execute(match, [pb.Request(**{io_names.MATCH_QUERY: q}),
                             pb.Request(**{io_names.MATCH_QUERY: q[:, :10]}),
                             pb.Request(**{io_names.MATCH_QUERY: q[::-1].copy()})])
    assert out[1].has_error() and out[1].error().code == pb.TritonError.INVALID_ARG
    ids0 = _outputs(out[0], io_names.NEIGHBOR_IDS)[0]
    ids2 = _outputs(out[2], io_names.NEIGHBOR_IDS)[0]
    assert ids0.shape == (2, 3) and np.array_equal(ids0, ids2[::-1])
