import pytest

from clip_metric.signature import ScoreSignature, _FIELDS


def _valid() -> dict:
    return {name: "x" for name in _FIELDS} | {"images_per_prompt": 1}


@pytest.mark.parametrize("inverted", ["3-1", "10-2"])
def test_an_inverted_images_per_prompt_range_is_refused_as_malformed(inverted):
    with pytest.raises(ValueError, match=f"images_per_prompt='{inverted}'"):
        ScoreSignature.from_dict(_valid() | {"images_per_prompt": inverted})


@pytest.mark.parametrize("ordered", ["1-3", "2-2"])
def test_an_ordered_images_per_prompt_range_is_read(ordered):
    assert ScoreSignature.from_dict(_valid() | {"images_per_prompt": ordered}).images_per_prompt == ordered
