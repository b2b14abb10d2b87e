"""``clip-metric eval --pipeline-kwargs``: what the pipeline's call could not take is refused before loading."""

from __future__ import annotations

import pytest

from clip_metric.cli import main
from _helpers.diffusion import build_tiny_pipeline

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipelines") / "checkpoint-1"
    build_tiny_pipeline(seed=0).save_pretrained(path)
    return path


@pytest.mark.parametrize("text", ['{"eta": 1e999}', '{"eta": -1e400}', '{"cross_attention_kwargs": {"scale": 1e999}}',
                                  '{"eta": 0.5, "eta": 0.7}', '{"cross_attention_kwargs": {"scale": 1, "scale": 2}}'])
def test_non_finite_numbers_and_duplicate_keys_anywhere_are_usage_errors(capsys, text):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "no-such-pipeline/", "--pipeline-kwargs", text])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--pipeline-kwargs" in err, err
    assert "not a finite number" in err or "duplicate key" in err, err


def test_arguments_the_pipeline_call_does_not_name_are_refused_before_loading(pipeline, capsys):
    code = main(["eval", str(pipeline), "--pipeline-kwargs", '{"guidence_scale": 30, "eta": 0.5}', "--accelerator",
                 "cpu", "--quiet"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "", captured.err
    assert "StableDiffusionPipeline" in captured.err and "'guidence_scale'" in captured.err
    assert "**kwargs would ignore it" in captured.err and "'eta'" not in captured.err
