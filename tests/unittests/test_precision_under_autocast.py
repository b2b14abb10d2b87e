"""The CLIP forward keeps its own precision under any autocast the caller has open.

Training scripts validate under ``torch.autocast`` (diffusers' ``log_validation``, accelerate's
``mixed_precision``): a ``precision="32"`` metric or evaluator called there must still compute
fp32 scores, and its signature must say so.
"""

from __future__ import annotations

import pytest
import torch

from clip_metric import ClipScore
from clip_metric.demos.tiny_clip import embedded_model_path
from clip_metric.encoder import ClipEncoder
from clip_metric.evaluation import PromptEvaluator
from clip_metric.utilities.precision import open_autocasts, own_precision

PROMPTS = ["a red circle on a blue background", "two green squares", "a yellow triangle", "a purple line"]
CALLER_AUTOCASTS = [torch.bfloat16, torch.float16]


def _images(n: int = len(PROMPTS), size: int = 40) -> torch.Tensor:
    return torch.rand(n, 3, size, size + 8, generator=torch.Generator().manual_seed(3))


def _generate(prompts, seeds):
    return torch.stack([torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(s)) for s in seeds])


@pytest.fixture(scope="module")
def fp32_encoder():
    return ClipEncoder.from_pretrained(embedded_model_path(), precision="32", quiet=True)


@pytest.mark.parametrize("dtype", CALLER_AUTOCASTS, ids=str)
def test_encoder_scores_in_fp32_under_a_caller_autocast(fp32_encoder, dtype):
    expected = fp32_encoder.score(_images(), PROMPTS)
    fp32_encoder.clear_text_cache()  # the text side must run under the autocast too
    with torch.autocast("cpu", dtype=dtype):
        got = fp32_encoder.score(_images(), PROMPTS)
        texts = fp32_encoder.encode_texts(["a blue star"])
        assert torch.is_autocast_enabled("cpu")  # the caller's autocast is back after each call
    assert got.dtype == texts.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    fp32_encoder.clear_text_cache()
    torch.testing.assert_close(texts, fp32_encoder.encode_texts(["a blue star"]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", CALLER_AUTOCASTS, ids=str)
def test_clip_score_keeps_fp32_under_a_caller_autocast(dtype):
    expected = ClipScore(embedded_model_path(), precision="32", keep_scores=True)
    expected.update(_images(), PROMPTS)
    metric = ClipScore(embedded_model_path(), precision="32", keep_scores=True)
    with torch.autocast("cpu", dtype=dtype):
        metric.update(_images(), PROMPTS)
        values = metric.compute()
    torch.testing.assert_close(metric.per_sample()[1], expected.per_sample()[1], atol=1e-6, rtol=0)
    assert values["clip/mean"].item() == pytest.approx(expected.compute()["clip/mean"].item(), abs=1e-6)
    assert metric.encoder.active_precision == "32"


@pytest.mark.parametrize("dtype", CALLER_AUTOCASTS, ids=str)
def test_evaluator_scores_and_signature_are_fp32_under_a_caller_autocast(tmp_path, dtype):
    def evaluator(name):
        return PromptEvaluator(embedded_model_path(), prompts=PROMPTS, batch_size=2, precision="32",
                               scores_dir=tmp_path / name)

    expected = evaluator("plain").evaluate(_generate, step=1)
    under = evaluator("autocast")
    with torch.autocast("cpu", dtype=dtype):
        got = under.evaluate(_generate, step=1)
    for a, b in zip(got.records, expected.records):
        assert a.score == pytest.approx(b.score, abs=1e-6), a.key
    assert got.summary["mean"] == pytest.approx(expected.summary["mean"], abs=1e-6)
    assert got.signature.precision == "32" and got.signature == expected.signature
    from clip_metric.records import read_scores

    assert read_scores(got.path).header["signature"]["precision"] == "32"


def test_own_precision_switches_off_every_caller_autocast_and_gives_it_back():
    cpu = torch.device("cpu")
    with torch.autocast("cpu", dtype=torch.float16):
        with own_precision("32", cpu):
            assert open_autocasts() == {}
        with own_precision("bf16-mixed", cpu):
            assert open_autocasts() == {"cpu": torch.bfloat16}
        assert open_autocasts() == {"cpu": torch.float16}
    assert open_autocasts() == {}


def test_a_32_bit_encoder_on_cuda_switches_tf32_off_for_its_forward_and_gives_it_back():
    # The flags exist without a GPU; the device only decides whether they are touched.
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        with own_precision("32", torch.device("cuda")):
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        with own_precision("bf16-mixed", torch.device("cuda")):
            assert torch.backends.cuda.matmul.allow_tf32  # lower precisions leave the caller's choice
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
