"""How the callback gets images out of the model under training.

The protocol is one function: ``generate_fn(pl_module, prompts, seeds) -> images``, returning
one image per prompt in any form :func:`clip_metric.images.standardize_images` accepts (a
``(N, 3, H, W)`` uint8 or float tensor, a list of PIL images, ...). ``seeds[i]`` is the fixed
seed of ``prompts[i]``: use it (e.g. ``torch.Generator().manual_seed(seed)``) so that each
prompt is rendered from the same noise at every evaluation, whatever the world size.

Without a ``generate_fn``, the callback calls ``pl_module.generate_images(prompts, seeds)``.
For a module that holds a diffusers pipeline, :class:`DiffusersGenerator` is ready-made.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

GenerateFn = Callable[[Any, list, list], Any]
GENERATE_METHOD = "generate_images"


def resolve_generate_fn(pl_module: Any, generate_fn: GenerateFn | None) -> GenerateFn:
    """The user's ``generate_fn``, or one that calls ``pl_module.generate_images``.

    Raises:
        TypeError: if neither exists.
    """
    if generate_fn is not None:
        return generate_fn
    if callable(getattr(pl_module, GENERATE_METHOD, None)):
        return _call_module_method
    raise TypeError(
        f"ClipScoreCallback needs images: give {type(pl_module).__name__} a "
        f"`{GENERATE_METHOD}(prompts, seeds)` method, or pass `generate_fn=` (for a diffusers pipeline held by "
        "the module: `generate_fn=DiffusersGenerator('pipeline')`)"
    )


def _call_module_method(pl_module: Any, prompts: list, seeds: list) -> Any:
    return getattr(pl_module, GENERATE_METHOD)(prompts, seeds)


class DiffusersGenerator:
    """A ``generate_fn`` for a LightningModule that holds a diffusers text-to-image pipeline.

    Each prompt gets its own ``torch.Generator`` seeded with the prompt's seed, and the pipeline
    returns float tensors in ``[0, 1]`` (``output_type="pt"``), which is the callback's default
    ``value_range``.

    Args:
        pipeline: name of the module attribute that holds the pipeline (or a method returning
            it, e.g. one that assembles the pipeline from the module's current weights).
        num_inference_steps: denoising steps per image.
        guidance_scale: classifier-free guidance scale, or None for the pipeline's default.
        height: output height, or None for the pipeline's default.
        width: output width, or None for the pipeline's default.
        pipeline_kwargs: any further keyword arguments of the pipeline call.

    Raises:
        ValueError: for a non-positive ``num_inference_steps``.

    Example:
        >>> generate = DiffusersGenerator("pipeline", num_inference_steps=25, guidance_scale=5.0)
        >>> generate.num_inference_steps
        25
    """

    def __init__(
        self,
        pipeline: str = "pipeline",
        num_inference_steps: int = 20,
        guidance_scale: float | None = None,
        height: int | None = None,
        width: int | None = None,
        **pipeline_kwargs: Any,
    ) -> None:
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"Expected `num_inference_steps` to be a positive int but got {num_inference_steps!r}")
        self.pipeline = pipeline
        self.num_inference_steps = num_inference_steps
        self.call_kwargs = dict(pipeline_kwargs)
        for name, value in (("guidance_scale", guidance_scale), ("height", height), ("width", width)):
            if value is not None:
                self.call_kwargs[name] = value

    def _pipeline(self, pl_module: Any) -> Any:
        pipe = getattr(pl_module, self.pipeline, None)
        if pipe is None:
            raise AttributeError(f"{type(pl_module).__name__} has no attribute {self.pipeline!r} holding a pipeline")
        if callable(pipe) and not hasattr(pipe, "scheduler"):
            pipe = pipe()  # a method that builds the pipeline
        return pipe

    def __call__(self, pl_module: Any, prompts: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        pipe = self._pipeline(pl_module)
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        device = getattr(pipe, "device", None) or getattr(pl_module, "device", torch.device("cpu"))
        generators = [torch.Generator(device=torch.device(device)).manual_seed(int(s)) for s in seeds]
        output = pipe(
            prompt=list(prompts),
            generator=generators,
            num_inference_steps=self.num_inference_steps,
            output_type="pt",
            **self.call_kwargs,
        )
        images = output.images if hasattr(output, "images") else output[0]
        return images
