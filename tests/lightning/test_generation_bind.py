"""``DiffusersGenerator.bind``: the bound callable carries the generator's rendering settings."""

from __future__ import annotations

import pytest

pytest.importorskip("diffusers")

from clip_metric.demos.tiny_clip import embedded_model_path
from clip_metric.evaluation import PromptEvaluator
from clip_metric.lightning import DiffusersGenerator
from clip_metric.records import read_scores
from _helpers.diffusion import SIZE, build_tiny_pipeline


def test_a_bound_pipeline_records_its_rendering_in_the_score_header_and_signature(tmp_path):
    generator = DiffusersGenerator(num_inference_steps=2, guidance_scale=3.0, height=SIZE, width=SIZE, eta=0.5)
    generate = generator.bind(build_tiny_pipeline())
    assert generate.rendering == generator.rendering
    evaluator = PromptEvaluator(embedded_model_path(), prompts=["a red circle", "two blue squares"],
                                precision="32", scores_dir=tmp_path / "scores")
    result = evaluator.evaluate(generate, step=1)
    header = read_scores(result.path).header
    assert header["rendering"] == generator.rendering
    assert header["rendering"]["guidance_scale"] == 3.0 and header["rendering"]["kwargs"] == {"eta": 0.5}
    assert result.signature.rendering not in (None, "-")
    plain = PromptEvaluator(embedded_model_path(), prompts=["a red circle", "two blue squares"], precision="32",
                            scores_dir=tmp_path / "plain")
    unbound = plain.evaluate(lambda prompts, seeds: generate(prompts, seeds), step=1)
    assert "rendering" not in read_scores(unbound.path).header
    assert result.signature.rendering != unbound.signature.rendering
