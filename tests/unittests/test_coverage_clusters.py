"""Coverage of the mean's interval when several images share one prompt, by simulation.

A library of prompts with a prompt effect (sd 0.04) and an image effect (sd 0.02): each draw
scores a random sample of its prompts with 1, 2 or 4 images each (or 1 to 4), and the interval
of :func:`~clip_metric.functional.summarize_clustered_scores` must cover the library's mean, the
mean over its prompts of each prompt's expected score, at the nominal 95% (within the binomial
error of the draws).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clip_metric.functional import cluster_means, summarize_clustered_scores, summarize_scores

LIBRARY = 1632
PROMPTS = 64
DRAWS = 2000
PROMPT_SD, IMAGE_SD = 0.04, 0.02


def _library(seed: int = 0) -> np.ndarray:
    return 0.30 + PROMPT_SD * np.random.default_rng(seed).standard_normal(LIBRARY)


def _draws(images_per_prompt, seed: int):
    """Per-image scores and prompt keys of ``DRAWS`` evaluations of a random sample of the library."""
    rng = np.random.default_rng(seed)
    library = _library()
    for _ in range(DRAWS):
        chosen = rng.choice(LIBRARY, PROMPTS, replace=False)
        if images_per_prompt == "1-4":
            counts = rng.integers(1, 5, PROMPTS)
        else:
            counts = np.full(PROMPTS, images_per_prompt)
        keys = np.repeat(chosen, counts)
        scores = library[keys] + IMAGE_SD * rng.standard_normal(keys.size)
        yield torch.from_numpy(scores), keys.tolist()


def _coverage(images_per_prompt, summarize, seed: int = 1) -> float:
    truth = _library().mean()
    hits = 0
    for scores, keys in _draws(images_per_prompt, seed):
        stats = summarize(scores, keys)
        hits += abs(float(stats["clip/mean"]) - truth) <= float(stats["clip/mean_ci"])
    return hits / DRAWS


@pytest.mark.parametrize("images_per_prompt", [1, 2, 4, "1-4"])
def test_interval_over_prompt_means_covers_the_library_mean_with_several_images_per_prompt(images_per_prompt):
    # 2,000 draws: the binomial error of a 0.95 coverage is 0.005, so 0.93 is four errors below.
    assert _coverage(images_per_prompt, summarize_clustered_scores) >= 0.93


def test_counting_every_image_as_a_sample_would_undercover_with_four_images_per_prompt():
    # What the per-prompt means fix: the images of one prompt are not independent samples.
    assert _coverage(4, lambda scores, keys: summarize_scores(scores)) < 0.90


def test_four_identical_images_per_prompt_give_the_interval_of_one():
    scores = torch.from_numpy(_library()[:PROMPTS])
    one = summarize_clustered_scores(scores, list(range(PROMPTS)))
    four = summarize_clustered_scores(scores.repeat_interleave(4), [k for k in range(PROMPTS) for _ in range(4)])
    assert float(four["clip/mean_ci"]) == pytest.approx(float(one["clip/mean_ci"]), rel=1e-12)
    assert float(four["clip/mean"]) == pytest.approx(float(one["clip/mean"]), rel=1e-12)
    assert (float(four["clip/count"]), float(four["clip/prompts"])) == (4 * PROMPTS, PROMPTS)


def test_prompts_weigh_the_same_whatever_their_number_of_images():
    stats = summarize_clustered_scores(torch.tensor([0.1, 0.1, 0.1, 0.5]), ["a", "a", "a", "b"])
    assert float(stats["clip/mean"]) == pytest.approx(0.3)
    assert float(stats["clip/min"]) == pytest.approx(0.1) and float(stats["clip/count"]) == 4


def test_cluster_means_keeps_the_first_seen_order_of_keys_and_counts_images():
    clusters = cluster_means([0.2, 0.3, 0.4, 0.6], ["b", "a", "b", "c"])
    assert clusters.keys == ["b", "a", "c"]
    assert clusters.means.tolist() == pytest.approx([0.3, 0.3, 0.6]) and clusters.sizes.tolist() == [2, 1, 1]


def test_cluster_means_refuses_a_key_count_other_than_the_score_count():
    with pytest.raises(ValueError, match="Expected one key per score .* got scores of shape \\(3,\\) and 2 keys"):
        cluster_means(torch.tensor([0.1, 0.2, 0.3]), ["a", "b"])


def test_no_scores_give_nan_statistics_and_zero_prompts():
    stats = summarize_clustered_scores(torch.zeros(0), [])
    assert np.isnan(float(stats["clip/mean"])) and float(stats["clip/prompts"]) == 0 and float(stats["clip/count"]) == 0
