"""The evaluation keys of a training config.json, read as SimpleTuner writes them."""

from __future__ import annotations

import json
import warnings

import pytest

from clip_metric.config import callback_kwargs, config_bool, evaluator_kwargs
from clip_metric.evaluation import PromptEvaluator


@pytest.mark.parametrize("word", ["true", "True", "TRUE", "yes", "1", " true "])
def test_a_string_true_selects_the_built_in_library(word):
    assert callback_kwargs({"--validation_prompt_library": word})["prompts"] == "default"


@pytest.mark.parametrize("word", ["false", "False", "no", "0"])
def test_a_string_false_leaves_the_user_library_alone(tmp_path, word):
    library = tmp_path / "user.json"
    library.write_text(json.dumps({"a": "a red fox", "b": "a blue car"}))
    kwargs = callback_kwargs({"validation_prompt_library": word, "user_prompt_library": str(library)})
    assert kwargs["prompts"] == str(library)
    with pytest.raises(ValueError, match="validation_prompt_library is false"):
        callback_kwargs({"validation_prompt_library": word})


def test_config_booleans_read_other_strings_as_no_boolean():
    assert config_bool("k", "maybe") is None and config_bool("k", 2) is None and config_bool("k", "No") is False


def test_a_tracker_the_package_does_not_drive_is_ignored_with_a_warning(tiny_clip_dir):
    config = {"--report_to": "comet_ml", "pretrained_evaluation_model_name_or_path": str(tiny_clip_dir)}
    with pytest.warns(UserWarning, match="comet_ml"):
        assert callback_kwargs(config)["report_to"] == "none"
    with pytest.warns(UserWarning, match="comet_ml"):
        evaluator = PromptEvaluator.from_config(config, max_prompts=4)
    assert evaluator is not None and len(evaluator.library) == 4
    with pytest.warns(UserWarning, match="mlflow"):
        assert callback_kwargs({"report_to": "wandb,mlflow"})["report_to"] == "wandb"
    with pytest.raises(ValueError, match="but got 'comet'"):
        callback_kwargs({"report_to": "comet"})


def test_evaluation_off_reads_no_library(tmp_path):
    config = {
        "evaluation_type": "none",
        "user_prompt_library": str(tmp_path / "missing.json"),
        "validation_prompt_library": True,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert PromptEvaluator.from_config(path) is None
        assert evaluator_kwargs(config) is None
        assert callback_kwargs(config)["enabled"] is False
