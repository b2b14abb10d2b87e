"""Config values as JSON writes them: integers for booleans, lists and "" for report_to."""

from __future__ import annotations

import json

import pytest

from clip_metric.config import callback_kwargs
from clip_metric.evaluation import PromptEvaluator


def test_an_integer_one_selects_the_built_in_library_like_the_string_one(tiny_clip_dir):
    model = str(tiny_clip_dir)
    as_int = PromptEvaluator.from_config({"validation_prompt_library": 1, "pretrained_evaluation_model_name_or_path": model})
    as_str = PromptEvaluator.from_config({"validation_prompt_library": "1", "pretrained_evaluation_model_name_or_path": model})
    assert as_int is not None and [p.id for p in as_int.library] == [p.id for p in as_str.library]


def test_an_integer_zero_is_false_like_the_string_zero(tmp_path):
    library = tmp_path / "user.json"
    library.write_text(json.dumps({"a": "a red fox"}))
    assert callback_kwargs({"validation_prompt_library": 0, "user_prompt_library": str(library)})["prompts"] == str(library)
    with pytest.raises(ValueError, match="validation_prompt_library is false"):
        callback_kwargs({"validation_prompt_library": 0})


def test_other_integers_are_no_prompt_library():
    with pytest.raises(ValueError, match="validation_prompt_library"):
        callback_kwargs({"validation_prompt_library": 2})


@pytest.mark.parametrize(
    "value, expected",
    [(["tensorboard"], "tensorboard"), (["wandb", "tensorboard"], "all"), (["tensorboard,wandb"], "all"), ([], "none"),
     ("", "none"), ("  ", "none"), (["none"], "none")],
)
def test_report_to_reads_a_list_like_a_comma_string_and_empty_as_none(value, expected):
    assert callback_kwargs({"report_to": value})["report_to"] == expected


def test_report_to_list_with_a_tracker_the_package_does_not_drive_keeps_the_others():
    with pytest.warns(UserWarning, match="mlflow"):
        assert callback_kwargs({"report_to": ["wandb", "mlflow"]})["report_to"] == "wandb"


@pytest.mark.parametrize("value", [["comet"], [1], 1, {"tensorboard": True}])
def test_report_to_that_names_no_known_tracker_is_refused(value):
    with pytest.raises(ValueError, match="report_to"):
        callback_kwargs({"report_to": value})


def test_evaluator_from_config_takes_report_to_as_a_list(tiny_clip_dir):
    config = {"report_to": ["tensorboard"], "pretrained_evaluation_model_name_or_path": str(tiny_clip_dir)}
    assert PromptEvaluator.from_config(config, max_prompts=2) is not None
