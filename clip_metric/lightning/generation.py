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

import contextlib
import functools
import inspect
from typing import Any, Callable, Iterator, Sequence

import torch

from clip_metric.utilities.precision import open_autocasts

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

    Each prompt gets its own ``torch.Generator`` seeded with the prompt's seed, so a prompt's
    initial noise does not depend on the batch it is rendered in, and the pipeline returns float
    tensors in ``[0, 1]`` (``output_type="pt"``), which is the callback's default ``value_range``.
    The generators live on the CPU by default, so a prompt starts from the same noise on any
    device (diffusers moves the noise to the pipeline's device).

    A pipeline whose components hold different dtypes (a mixed-precision fine-tune: the vae and
    text encoder cast to bf16 or fp16, the unet trained in fp32 under accelerate's autocast) is
    called under an autocast of its half dtype on its device, as diffusers' own validation does,
    unless the caller already has one open there. A pipeline of one dtype (fp32, or all bf16)
    is called as it is.

    Args:
        pipeline: name of the module attribute that holds the pipeline, or of a method (or
            property) returning it, e.g. one that assembles the pipeline from the module's current
            weights.
        num_inference_steps: denoising steps per image.
        guidance_scale: classifier-free guidance scale, or None for the pipeline's default.
        height: output height, or None for the pipeline's default.
        width: output width, or None for the pipeline's default.
        generator_device: device of the per-prompt generators (default ``"cpu"``), or None for the
            pipeline's device.
        pipeline_kwargs: further keyword arguments of the pipeline call (e.g. ``{"eta": 0.5}``),
            except those this class sets itself (``prompt``, ``generator``, ``output_type``,
            ``latents``) and ``num_images_per_prompt`` other than 1. This is the form a
            ``LightningCLI`` YAML file can give (``init_args: {pipeline_kwargs: {eta: 0.5}}``).
        kwargs: the same, as keyword arguments; they override ``pipeline_kwargs``.

    Raises:
        ValueError: for a non-positive ``num_inference_steps`` or a reserved ``pipeline_kwargs`` key.
        TypeError: if ``pipeline`` is not an attribute name.

    Example:
        >>> generate = DiffusersGenerator("pipeline", num_inference_steps=25, guidance_scale=5.0)
        >>> generate.num_inference_steps
        25
    """

    _RESERVED = ("prompt", "generator", "output_type", "latents", "num_inference_steps")

    def __init__(
        self,
        pipeline: str = "pipeline",
        num_inference_steps: int = 20,
        guidance_scale: float | None = None,
        height: int | None = None,
        width: int | None = None,
        generator_device: str | None = "cpu",
        pipeline_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(pipeline, str):
            raise TypeError(
                f"Expected `pipeline` to be the name of the module attribute holding the pipeline but got "
                f"{type(pipeline).__name__}"
            )
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"Expected `num_inference_steps` to be a positive int but got {num_inference_steps!r}")
        call_kwargs = {**dict(pipeline_kwargs or {}), **kwargs}
        reserved = sorted(set(call_kwargs) & set(self._RESERVED))
        if reserved:
            raise ValueError(
                f"`{reserved[0]}` is set by DiffusersGenerator and cannot be passed to the pipeline"
                + (" (use DiffusersGenerator(num_inference_steps=...))" if reserved[0] == "num_inference_steps" else "")
            )
        images_per_prompt = call_kwargs["num_images_per_prompt"] if "num_images_per_prompt" in call_kwargs else 1
        if images_per_prompt != 1:
            raise ValueError(
                "Expected `num_images_per_prompt` to be 1 (the callback scores one image per prompt) but got "
                f"{images_per_prompt!r}"
            )
        self.pipeline = pipeline
        self.num_inference_steps = num_inference_steps
        self.generator_device = generator_device
        self.call_kwargs = call_kwargs
        for name, value in (("guidance_scale", guidance_scale), ("height", height), ("width", width)):
            if value is not None:
                self.call_kwargs[name] = value

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.pipeline!r}, num_inference_steps={self.num_inference_steps}, "
            f"generator_device={self.generator_device!r}, call_kwargs={self.call_kwargs!r})"
        )

    @property
    def rendering(self) -> dict[str, Any]:
        """The settings that change the images, as a JSON-safe dict (for score headers and signatures).

        ``guidance_scale``, ``height``, ``width`` and ``negative_prompt`` are None where the
        pipeline's defaults apply; any further pipeline-call arguments are under ``kwargs``.

        Example:
            >>> DiffusersGenerator(num_inference_steps=30, guidance_scale=7.5).rendering["guidance_scale"]
            7.5
        """
        named = ("guidance_scale", "height", "width", "negative_prompt")
        rendering: dict[str, Any] = {"num_inference_steps": self.num_inference_steps}
        rendering.update({name: _json_safe(self.call_kwargs.get(name)) for name in named})
        others = {key: _json_safe(value) for key, value in sorted(self.call_kwargs.items()) if key not in named}
        if others:
            rendering["kwargs"] = others
        return rendering

    def bind(self, pipeline: Any) -> Callable[[list, list], Any]:
        """``generate(prompts, seeds)`` rendering with ``pipeline`` itself: for a loop without Lightning.

        The callable carries this generator's :attr:`rendering`, so that
        :class:`~clip_metric.evaluation.PromptEvaluator` records the settings in score headers
        and signatures as it does for the generator itself.

        Example:
            >>> generate = DiffusersGenerator(num_inference_steps=2).bind(lambda **kwargs: None)
            >>> callable(generate), generate.rendering["num_inference_steps"]
            (True, 2)
        """
        holder = _PipelineHolder()
        setattr(holder, self.pipeline, pipeline)
        return _BoundGenerator(self, holder)

    def _pipeline(self, pl_module: Any) -> Any:
        try:
            pipe = getattr(pl_module, self.pipeline)
        except AttributeError as err:
            raise AttributeError(
                f"{type(pl_module).__name__} has no attribute {self.pipeline!r} holding a diffusers pipeline "
                f"(DiffusersGenerator(pipeline=...) names it)"
            ) from err
        if inspect.ismethod(pipe) or inspect.isfunction(pipe) or isinstance(pipe, functools.partial):
            pipe = pipe()  # a method that builds the pipeline
        if pipe is None:
            raise AttributeError(f"`{type(pl_module).__name__}.{self.pipeline}` is None, not a diffusers pipeline")
        if not callable(pipe):
            raise TypeError(
                f"Expected `{type(pl_module).__name__}.{self.pipeline}` to be a diffusers pipeline but got "
                f"{type(pipe).__name__}"
            )
        return pipe

    def _generators(self, pipe: Any, pl_module: Any, seeds: Sequence[int]) -> list[torch.Generator]:
        device = self.generator_device
        if device is None:
            device = getattr(pipe, "device", None) or getattr(pl_module, "device", None) or "cpu"
        return [torch.Generator(device=torch.device(device)).manual_seed(int(seed)) for seed in seeds]

    def __call__(self, pl_module: Any, prompts: Sequence[str], seeds: Sequence[int]) -> Any:
        if len(prompts) != len(seeds):
            raise ValueError(f"Expected one seed per prompt but got {len(prompts)} prompts and {len(seeds)} seeds")
        pipe = self._pipeline(pl_module)
        generators = self._generators(pipe, pl_module, seeds)
        with _quiet_progress_bar(pipe), mixed_dtype_autocast(pipe):
            output = pipe(
                prompt=list(prompts),
                generator=generators,
                num_inference_steps=self.num_inference_steps,
                output_type="pt",
                **self.call_kwargs,
            )
        return output.images if hasattr(output, "images") else output[0]


def _component_dtypes(pipe: Any) -> dict[str, torch.dtype]:
    """The dtype of each ``nn.Module`` component of a diffusers pipeline (its first floating parameter)."""
    components = getattr(pipe, "components", None)
    if not isinstance(components, dict):
        return {}
    dtypes = {}
    for name, component in components.items():
        if isinstance(component, torch.nn.Module):
            floating = (p.dtype for p in component.parameters() if p.is_floating_point())
            dtype = next(floating, None)
            if dtype is not None:
                dtypes[name] = dtype
    return dtypes


def mixed_dtype_autocast(pipe: Any) -> contextlib.AbstractContextManager:
    """An autocast of the pipeline's half dtype on its device when its components' dtypes differ.

    Without it, a bf16 vae decodes the fp32 latents of an fp32 unet and fails (``Input type
    (float) and bias type (c10::BFloat16) should be the same``). A pipeline of one dtype, a
    caller's autocast already open on the pipeline's device type, or a device type torch cannot
    autocast on get a null context.
    """
    dtypes = _component_dtypes(pipe)
    if len(set(dtypes.values())) < 2:
        return contextlib.nullcontext()
    halves = [d for d in dtypes.values() if d in (torch.bfloat16, torch.float16)]
    if not halves:
        return contextlib.nullcontext()  # e.g. fp32 and fp64: nothing autocast would fix
    dtype = getattr(pipe, "dtype", None)
    dtype = dtype if dtype in halves else halves[0]
    device = getattr(pipe, "device", None)
    device_type = torch.device(device).type if device is not None else "cpu"
    if not torch.amp.is_autocast_available(device_type) or device_type in open_autocasts():
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)


def _json_safe(value: Any) -> Any:
    """``value`` if JSON can hold it, else its ``repr`` (a tensor or an object passed to the pipeline)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    return repr(value)


class _PipelineHolder:
    """Stands in for the module that would hold the pipeline (see :meth:`DiffusersGenerator.bind`)."""


class _BoundGenerator:
    """``generate(prompts, seeds)`` of a :class:`DiffusersGenerator` bound to one pipeline.

    Not a ``functools.partial``: the evaluator reads ``rendering`` off the callable it is given.
    """

    def __init__(self, generator: DiffusersGenerator, holder: _PipelineHolder) -> None:
        self.generator = generator
        self._holder = holder

    @property
    def rendering(self) -> dict[str, Any]:
        """The bound generator's :attr:`DiffusersGenerator.rendering` (read at each call, so never stale)."""
        return self.generator.rendering

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> Any:
        return self.generator(self._holder, prompts, seeds)

    def __repr__(self) -> str:
        return f"{self.generator!r}.bind({getattr(self._holder, self.generator.pipeline)!r})"


@contextlib.contextmanager
def _quiet_progress_bar(pipe: Any) -> Iterator[None]:
    """Hide the pipeline's progress bar during the call, then give back the user's settings.

    ``set_progress_bar_config`` replaces the whole configuration, so the previous one is kept
    from ``_progress_bar_config``, where diffusers stores it.
    """
    if not hasattr(pipe, "set_progress_bar_config"):
        yield
        return
    missing = object()
    previous = getattr(pipe, "_progress_bar_config", missing)
    settings = dict(previous) if isinstance(previous, dict) else {}
    pipe.set_progress_bar_config(**{**settings, "disable": True})
    try:
        yield
    finally:
        if previous is missing:
            with contextlib.suppress(AttributeError):
                del pipe._progress_bar_config
        else:
            pipe._progress_bar_config = previous
