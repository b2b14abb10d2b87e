"""The ``rendering`` field of a score signature: how the images were made, where the package made them."""

from __future__ import annotations

from clip_metric.lightning.generation import DiffusersGenerator
from clip_metric.signature import SEED_RULE, ScoreSignature, rendering_field

OLD = {"version": "0.1.0", "model": "m", "image": "32,bicubic+aa,crop32", "precision": "32", "scale": "cosine",
       "prompts": "p#00,n2,all", "seed": SEED_RULE, "images_per_prompt": 1}


def test_a_signature_from_an_older_header_without_rendering_reads_as_unknown_and_prints_as_before():
    signature = ScoreSignature.from_dict(OLD)
    assert signature.rendering == "-" and "rendering" not in str(signature)
    assert ScoreSignature.from_dict(signature.as_dict()) == signature


def test_different_renderings_are_different_signatures():
    a = ScoreSignature(**OLD, rendering=rendering_field(DiffusersGenerator(num_inference_steps=30).rendering))
    b = ScoreSignature(**OLD, rendering=rendering_field(
        DiffusersGenerator(num_inference_steps=30, guidance_scale=7.5, height=512, width=512).rendering))
    assert a.differences(b) == ["rendering: steps30 vs steps30,cfg7.5,512x512"]
    assert str(b).endswith("|rendering:steps30,cfg7.5,512x512")


def test_the_generator_s_rendering_holds_every_call_argument_as_json():
    generate = DiffusersGenerator(num_inference_steps=4, guidance_scale=2.0, negative_prompt="blurry", eta=0.5)
    assert generate.rendering == {"num_inference_steps": 4, "guidance_scale": 2.0, "height": None, "width": None,
                                  "negative_prompt": "blurry", "kwargs": {"eta": 0.5}}
    field = rendering_field(generate.rendering)
    assert field.startswith("steps4,cfg2,neg#") and ",kwargs#" in field
    assert rendering_field({}) == "-"
