"""Image input contract and tensor preprocessing.

Everything a user may hand to the metric (uint8 or float tensors, PIL images, numpy arrays,
lists of differently sized images, grayscale or RGBA) is turned into float RGB tensors in
``[0, 1]`` on the encoder's device, then resized, cropped and normalised with tensor operations
that follow the model's own image-processor config. There is no PIL round trip for tensors, and
nothing is silently rescaled: float images must declare their ``value_range`` and are checked
against it.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ValueRange = tuple[float, float]

# Float images may overshoot their declared range by this fraction of its width (rounding in a
# VAE decode, say) before they are refused; whatever passes is clamped into the range.
_RANGE_TOLERANCE = 1e-3

# float32 maps a range to [0, 1] only while its bounds are at most this many widths from zero
# (an error of at most 2**-20 in [0, 1]); beyond, the mapping is done in float64.
_FLOAT32_SPAN = 16

# Above this many resized pixels, only the window the center crop keeps is resized (a tiny file
# with an extreme aspect ratio must not demand gigabytes).
_MAX_RESIZED_PIXELS = 4096 * 4096

# Pillow's resampling codes, as stored in Hugging Face image-processor configs.
_PIL_RESAMPLE_TO_TORCH = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bicubic"}


def _is_pil_image(obj: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(obj, Image.Image)


def check_value_range(value_range: Any) -> ValueRange:
    """``(low, high)`` as floats: finite, ``low < high``, and a width ``high - low`` that neither
    overflows to inf nor underflows below float64's smallest normal number.

    Raises:
        ValueError: naming the range and what is wrong with it.
    """
    # Only an ordered pair of real numbers: a string, a set (unordered) or bools are no range.
    if isinstance(value_range, (str, bytes, set, frozenset, dict)):
        raise ValueError(f"Expected `value_range` to be a pair (low, high) but got {value_range!r}")
    try:
        bounds = list(value_range)
    except TypeError:
        raise ValueError(f"Expected `value_range` to be a pair (low, high) but got {value_range!r}") from None
    if len(bounds) != 2:
        raise ValueError(f"Expected `value_range` to be a pair (low, high) but got {value_range!r}")
    low, high = (_range_bound(v, value_range) for v in bounds)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"Expected `value_range` with finite bounds but got {value_range!r}")
    if not low < high:
        raise ValueError(f"Expected `value_range` with low < high but got {value_range!r}")
    width = high - low
    if not math.isfinite(width):
        raise ValueError(
            f"Expected `value_range` whose width (high - low) is a finite number but got {value_range!r}, "
            "whose width overflows to inf"
        )
    if width < sys.float_info.min:
        raise ValueError(
            f"Expected `value_range` whose width (high - low) is at least {sys.float_info.min:.3g} but got "
            f"{value_range!r}, whose width {width!r} underflows"
        )
    return low, high


def _range_bound(value: Any, value_range: Any) -> float:
    """One bound of ``value_range`` as a float: a real number (a 0-d array or tensor too), never a bool."""
    if isinstance(value, (Tensor, np.ndarray)) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(
            f"Expected `value_range` to be a pair of real numbers (low, high) but got {value_range!r}, "
            f"whose bound {value!r} is a {type(value).__name__}"
        )
    try:
        return float(value)
    except OverflowError:
        raise ValueError(
            f"Expected `value_range` with bounds a float can hold but got {value_range!r}, "
            f"whose bound overflows a float"
        ) from None


def _suggest_range(vmin: float, vmax: float) -> str:
    if vmin >= 0.0 and vmax <= 1.0:
        return "value_range=(0, 1)"
    if vmin >= -1.0 and vmax <= 1.0:
        return "value_range=(-1, 1)"
    if vmin >= 0.0 and vmax <= 255.0:
        return "uint8 images or value_range=(0, 255)"
    return "clamping the images first (e.g. `images.clamp(-1, 1)`) and value_range=(-1, 1)"


# Float dtypes torch reads as they are; other numpy floats (longdouble / float128) are read as float64.
_NUMPY_TORCH_FLOATS = (np.float16, np.float32, np.float64)


def _from_numpy(array: np.ndarray) -> Tensor:
    """Numpy images are channels-last: (H, W), (H, W, C) or (N, H, W, C)."""
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"Expected numpy images of an integer (0-255) or float dtype but got {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and array.dtype.type not in _NUMPY_TORCH_FLOATS:
        # Out-of-range values become inf, which the range check then names.
        with np.errstate(over="ignore"):
            array = array.astype(np.float64)
    if np.issubdtype(array.dtype, np.integer) and array.dtype != np.uint8:
        array = _integers_to_uint8(array)
    if not array.flags.writeable:  # torch.from_numpy warns on read-only memory (PIL's buffers)
        array = array.copy()
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.ndim == 2:
        return tensor.unsqueeze(0)
    if tensor.ndim == 3 and tensor.shape[-1] in (1, 3, 4):
        return tensor.permute(2, 0, 1)
    if tensor.ndim == 4 and tensor.shape[-1] in (1, 3, 4):
        return tensor.permute(0, 3, 1, 2)
    raise ValueError(
        f"Expected numpy images of shape (H, W), (H, W, C) or (N, H, W, C) with C in (1, 3, 4) "
        f"but got {tuple(array.shape)}"
    )


def _integers_to_uint8(array: Any) -> Any:
    """Integer pixels of any integer dtype, checked to lie in 0-255, as uint8 (numpy or torch)."""
    is_numpy = isinstance(array, np.ndarray)
    empty = array.size == 0 if is_numpy else array.numel() == 0
    wide = array if is_numpy else array.to(torch.int64)  # min/max of every integer dtype
    low, high = (0, 0) if empty else (int(wide.min()), int(wide.max()))
    if low < 0 or high > 255:
        raise ValueError(
            f"Expected integer images with values in 0-255 but got values in [{low}, {high}] "
            f"(dtype {array.dtype}); for 16-bit images divide by 257 first, or pass floats with `value_range`"
        )
    return array.astype(np.uint8) if is_numpy else array.to(torch.uint8)


# PIL modes holding 16-bit or 32-bit integer pixels; 16-bit PNGs open as one of these.
_PIL_WIDE_INTEGER_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def pil_to_tensor(image: Any) -> Tensor:
    """A PIL image as a ``(C, H, W)`` tensor, as the Hugging Face processor reads it.

    Transparency (an alpha band, straight or premultiplied as in ``"RGBa"``/``"La"``, or a
    transparent colour) is composited onto white, after Pillow's conversion to ``"RGBA"``;
    16-bit images are rounded to 8 bits (``v * 255 / 65535``); ``"F"`` images are floats and go
    through ``value_range`` like float tensors.
    """
    mode = image.mode
    transparent = image.info.get("transparency") is not None  # a palette's, or an L/RGB colour key
    if mode in ("RGB", "L") and not transparent:
        return _from_numpy(np.asarray(image))
    if mode in _PIL_WIDE_INTEGER_MODES:
        values = np.asarray(image).astype(np.int64)
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > 65535:
            raise ValueError(
                f"Expected a PIL image of mode {mode!r} with 16-bit values (0-65535) but got values in [{low}, {high}]"
            )
        return _from_numpy(((values * 255 + 32767) // 65535).astype(np.uint8))
    if mode == "F":
        return _from_numpy(np.asarray(image, dtype=np.float32))
    try:
        # "a" is premultiplied alpha (RGBa, La): convert("RGB") would drop it uncomposited.
        if {"A", "a"} & set(image.getbands()) or transparent:
            from PIL import Image

            # Pillow converts "La" to "LA" only; from there to "RGBA" as any other mode.
            rgba = (image.convert("LA") if mode == "La" else image).convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return _from_numpy(np.asarray(Image.alpha_composite(white, rgba).convert("RGB")))
        return _from_numpy(np.asarray(image.convert("RGB")))
    except (ValueError, OSError) as err:
        raise ValueError(f"Expected a PIL image convertible to RGB but got mode {mode!r} ({err})") from None


def _check_storage(tensor: Tensor) -> None:
    """Refuse tensors whose pixels cannot be read: nested, sparse, quantized or on the meta device."""
    if tensor.is_quantized:
        raise ValueError(
            f"Expected an image tensor of plain values but got a quantized tensor (dtype {tensor.dtype}); "
            "call `.dequantize()` first"
        )
    if getattr(tensor, "is_nested", False):
        raise ValueError("Expected a dense image tensor but got a nested tensor; pass a list of (C, H, W) tensors")
    if tensor.layout != torch.strided:
        raise ValueError(f"Expected a dense (strided) image tensor but got layout {tensor.layout}; call `.to_dense()`")
    if tensor.device.type == "meta":
        raise ValueError("Expected an image tensor with data but got a tensor on the meta device")


def _check_tensor_image(tensor: Tensor, batched: bool) -> None:
    expected = "(N, C, H, W)" if batched else "(C, H, W)"
    channel_dim = 1 if batched else 0
    if tensor.shape[channel_dim] not in (1, 3, 4):
        hint = ""
        if tensor.shape[-1] in (1, 3, 4):
            hint = " (channels-last? use `.permute(0, 3, 1, 2)` for a batch or `.permute(2, 0, 1)` for one image)"
        raise ValueError(
            f"Expected images of shape {expected} with C in (1, 3, 4) but got {tuple(tensor.shape)}{hint}"
        )
    if tensor.shape[-1] == 0 or tensor.shape[-2] == 0:
        raise ValueError(f"Expected images with non-zero height and width but got {tuple(tensor.shape)}")
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise ValueError(f"Expected images of an integer (0-255) or float dtype but got {tensor.dtype}")


def _to_rgb01(images: Tensor, value_range: ValueRange, keep_uint8: bool = False) -> Tensor:
    """(N, C, H, W) uint8 or float -> (N, 3, H, W) float32 in [0, 1] (or uint8, if kept)."""
    channels = images.shape[1]
    if not images.is_floating_point() and images.dtype != torch.uint8:
        images = _integers_to_uint8(images)
    if channels == 4:
        images = _composite_on_white(images, value_range)
        if images.is_floating_point():
            return images  # already RGB in [0, 1]
        channels = 3
    if images.dtype == torch.uint8:
        if keep_uint8:
            return images.expand(-1, 3, -1, -1).contiguous() if channels == 1 else images
        images = images.float().div_(255.0)
    else:
        low, high = value_range
        _check_range_fits(images.dtype, value_range)
        seen = images.detach()
        vmin, vmax = (v.item() for v in torch.aminmax(seen if seen.dtype == torch.float64 else seen.float()))
        if not (np.isfinite(vmin) and np.isfinite(vmax)):
            raise ValueError("Expected finite pixel values but the images contain NaN or Inf")
        slack = _RANGE_TOLERANCE * (high - low)
        if vmin < low - slack or vmax > high + slack:
            raise ValueError(
                f"Expected float images with values in value_range={value_range} but got values in "
                f"[{vmin:.4g}, {vmax:.4g}]; did you mean {_suggest_range(vmin, vmax)}?"
            )
        if (low, high) == (0.0, 1.0):
            images = images.float()
        elif _float32_safe(value_range):
            images = (images.float() - low) / (high - low)
        else:  # bounds, width or relative precision beyond float32 (e.g. (0, 1e-300) or (1e8, 1e8 + 1))
            images = ((images.double() - low) / (high - low)).float()
        images = images.clamp(0.0, 1.0)
    if channels == 1:
        images = images.expand(-1, 3, -1, -1)
    return images


def _float32_safe(value_range: ValueRange) -> bool:
    """Whether mapping ``value_range`` to [0, 1] in float32 neither overflows, underflows nor loses
    the range's relative precision.

    float32 rounds a value of magnitude ``m`` to about ``m * 2**-24``; against the width that is
    an error of ``m / width * 2**-24`` in [0, 1], so bounds far from zero against the width (e.g.
    ``(1e8, 1e8 + 1)``) are mapped in float64 first.
    """
    low, high = value_range
    info = torch.finfo(torch.float32)
    magnitude, width = max(abs(low), abs(high)), high - low
    return magnitude <= info.max / 4 and width >= info.tiny * 2**24 and magnitude <= width * _FLOAT32_SPAN


def _check_range_fits(dtype: torch.dtype, value_range: ValueRange) -> None:
    """Refuse a range narrower than the float dtype can tell apart from zero (its images are all 0)."""
    if dtype == torch.float64:
        return
    low, high = value_range
    tiny = torch.finfo(dtype).tiny
    if high - low < tiny:
        raise ValueError(
            f"Expected a `value_range` that {dtype} images can hold but got value_range={value_range}: its width "
            f"{high - low:.3g} is below {dtype}'s smallest normal number {tiny:.3g}; pass float64 images or "
            "rescale them to (0, 1)"
        )


def _composite_on_white(images: Tensor, value_range: ValueRange) -> Tensor:
    """RGBA -> RGB over a white background, as the Hugging Face processor does.

    uint8 stays uint8 (rounded to nearest, as Pillow's ``alpha_composite`` does, within one
    level); floats are mapped to ``[0, 1]`` first (range-checked) and returned as RGB in
    ``[0, 1]``.
    """
    if images.dtype == torch.uint8:
        rgb, alpha = images[:, :3].float(), images[:, 3:].float()
        out = (rgb * alpha + 255.0 * (255.0 - alpha)) / 255.0
        return out.round_().clamp_(0, 255).to(torch.uint8)
    rgba = _to_rgb01(images[:, :3], value_range), _to_rgb01(images[:, 3:], value_range)[:, :1]
    rgb, alpha = rgba
    return rgb * alpha + (1.0 - alpha)


def standardize_images(
    images: Any, value_range: Any = (0.0, 1.0), device: torch.device | None = None, keep_uint8: bool = False
) -> list[Tensor]:
    """Turn any supported image input into float RGB batches in ``[0, 1]`` on ``device``.

    Supported inputs: a uint8 tensor (values 0-255) or float tensor (values in ``value_range``)
    of shape ``(N, C, H, W)`` or ``(C, H, W)`` (integer tensors of any integer dtype with values
    in 0-255 count as uint8); a PIL image (any mode convertible to RGB; transparency composited
    onto white, 16-bit modes rounded to 8 bits, mode ``"F"`` as floats); a numpy array ``(H, W)``,
    ``(H, W, C)`` or ``(N, H, W, C)``; or a list/tuple of any of these, possibly of different
    sizes. ``C`` may be 1 (grayscale, repeated to RGB), 3, or 4 (RGBA, composited onto white as
    the Hugging Face processor does).

    Args:
        images: the images, in one of the forms above.
        value_range: ``(low, high)`` of float pixel values: ``(0, 1)`` by default, ``(-1, 1)``
            for raw diffusion outputs. Ignored for uint8 inputs.
        device: where to put the result; conversion happens after the move, so uint8 data
            travels at a quarter of the float size.
        keep_uint8: return uint8 batches (0-255) as uint8 instead of float, for
            :class:`ImageTransform`: they travel to the device at a quarter of the float size.

    Returns:
        A list of ``(n_i, 3, H_i, W_i)`` float32 tensors in ``[0, 1]`` (uint8 for uint8 inputs
        with ``keep_uint8``), one per run of same-sized inputs, in input order (a single batched
        tensor gives a one-element list).

    Raises:
        ValueError: for an empty input, wrong rank or channel count, unsupported dtype or
            storage (nested, sparse, quantized, meta), NaN/Inf pixels, integers outside 0-255,
            float values outside ``value_range``, or a ``value_range`` whose width overflows,
            underflows, or is narrower than the images' float dtype can hold; each message
            names the shape, dtype, range or values.

    Example:
        >>> import torch
        >>> batches = standardize_images(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
        >>> [tuple(b.shape) for b in batches]
        [(2, 3, 8, 8)]
    """
    value_range = check_value_range(value_range)
    if isinstance(images, Tensor):
        _check_storage(images)
    if isinstance(images, Tensor) and images.ndim != 3 and images.ndim != 4:
        raise ValueError(
            f"Expected a batch of images of shape (N, C, H, W) or one image (C, H, W) but got shape "
            f"{tuple(images.shape)}"
        )
    if isinstance(images, Tensor) and images.ndim == 4:
        raw = [images]
    elif isinstance(images, np.ndarray) and images.ndim == 4:
        raw = [_from_numpy(images)]
    elif isinstance(images, (Tensor, np.ndarray)) or _is_pil_image(images):
        raw = [_single_image(images)]
    elif isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        raw = [_single_image(image, index) for index, image in enumerate(images)]
    else:
        raise ValueError(
            f"Expected images as a tensor, numpy array, PIL image or a list of them but got {type(images).__name__}"
        )
    if sum(t.shape[0] for t in raw) == 0:
        raise ValueError("Expected at least one image but got zero images")
    for tensor in raw:
        _check_tensor_image(tensor, batched=True)

    # Group runs of equally sized single images so they are processed as one batch.
    groups: list[list[Tensor]] = []
    for tensor in raw:
        if groups and groups[-1][-1].shape[1:] == tensor.shape[1:] and groups[-1][-1].dtype == tensor.dtype:
            groups[-1].append(tensor)
        else:
            groups.append([tensor])
    batches = []
    for group in groups:
        batch = group[0] if len(group) == 1 else torch.cat(group)
        batch = batch.to(device, non_blocking=True) if device is not None else batch
        batches.append(_to_rgb01(batch, value_range, keep_uint8))
    return batches


def _single_image(image: Any, index: int | None = None) -> Tensor:
    where = "" if index is None else f" at position {index}"
    if isinstance(image, Tensor):
        _check_storage(image)
        if image.ndim != 3:
            raise ValueError(f"Expected an image of shape (C, H, W){where} but got {tuple(image.shape)}")
        _check_tensor_image(image, batched=False)
        return image.unsqueeze(0)
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise ValueError(f"Expected a numpy image of shape (H, W) or (H, W, C){where} but got {image.shape}")
        return _from_numpy(image).unsqueeze(0)
    if _is_pil_image(image):
        return pil_to_tensor(image).unsqueeze(0)
    raise ValueError(f"Expected a tensor, numpy array or PIL image{where} but got {type(image).__name__}")


@dataclass(frozen=True)
class ImageTransform:
    """Resize, center-crop and normalise, as the model's image processor would, on tensors.

    Resizing uses :func:`torch.nn.functional.interpolate` with ``antialias=True`` (bicubic for
    CLIP, as its processor's ``resample=3`` asks), which follows Pillow's filter on downscaling.
    Every image is resized in float32 and clamped to ``[0, 1]``, uint8 ones too (divided by 255
    first): a uint8 image and the same image as floats ``/ 255`` give the same pixels, and
    nothing is rounded to uint8 on the way.

    Args:
        shortest_edge: resize so the shorter side has this length (CLIP), or None.
        size: resize to this exact ``(height, width)`` (SigLIP), or None.
        crop: center-crop to this ``(height, width)``, or None.
        mean: per-channel normalisation mean.
        std: per-channel normalisation std.
        interpolation: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.
    """

    shortest_edge: int | None
    size: tuple[int, int] | None
    crop: tuple[int, int] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    @classmethod
    def from_image_processor(cls, processor: Any) -> ImageTransform:
        """Read the transform from a Hugging Face image processor (or a dict of its config)."""
        get = processor.get if isinstance(processor, dict) else lambda k, d=None: getattr(processor, k, d)
        size = _as_dict(get("size"))
        shortest_edge = size_hw = crop = None
        if get("do_resize", True) and size:
            if size.get("shortest_edge"):
                shortest_edge = int(size["shortest_edge"])
            elif size.get("height") and size.get("width"):
                size_hw = (int(size["height"]), int(size["width"]))
            else:
                raise ValueError(f"Unsupported image-processor size {size!r}: expected shortest_edge or height/width")
        crop_size = _as_dict(get("crop_size"))
        if get("do_center_crop", False) and crop_size:
            crop = (int(crop_size["height"]), int(crop_size["width"]))
        mean = get("image_mean") or (0.0, 0.0, 0.0)
        std = get("image_std") or (1.0, 1.0, 1.0)
        if not get("do_normalize", True):
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        resample = get("resample", 3)
        interpolation = _PIL_RESAMPLE_TO_TORCH.get(int(getattr(resample, "value", resample)), "bicubic")
        return cls(shortest_edge, size_hw, crop, _triple(mean), _triple(std), interpolation)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) after resize, before cropping (Hugging Face's rounding)."""
        if self.size is not None:
            return self.size
        if self.shortest_edge is not None:
            short, long = (height, width) if height <= width else (width, height)
            new_long = int(self.shortest_edge * long / short)
            return (self.shortest_edge, new_long) if height <= width else (new_long, self.shortest_edge)
        return height, width

    def __call__(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) float in [0, 1], or uint8 -> normalised float32 model input."""
        if images.dtype == torch.uint8:
            # One resize path: torch's uint8 kernel rounds (and differs from the float one by
            # up to a few levels), so uint8 and the same floats / 255 would score differently.
            images = images.float().div_(255.0)
        height, width = images.shape[-2:]
        new_h, new_w = self.output_size(height, width)
        if new_h * new_w > _MAX_RESIZED_PIXELS:
            images = self._resize_kept_window(images, new_h, new_w)
        elif (new_h, new_w) != (height, width):
            images = self._resize(images, new_h, new_w)
        if self.crop is not None:
            images = _center_crop(images, self.crop)
        mean, std = self._constants(images.device)
        return (images - mean) / std

    def _resize_kept_window(self, images: Tensor, new_h: int, new_w: int) -> Tensor:
        """Resize only what the center crop keeps, for images of extreme aspect ratio.

        Resizing a 1 x 1,000,000 image to a shortest edge of 224 would need hundreds of
        gigabytes, and only its middle survives the crop. Along such an axis the source is cut
        to a window that starts on a multiple of the resampling period and reaches past the kept
        pixels by the filter's support, so every kept pixel gets the same weights as in a resize
        of the whole image: the results agree within float rounding of the kernel positions, at
        the cost of the window only.

        Returns:
            The resized image, cut to the crop along the long axis (not yet along the other).
        """
        if self.crop is None:
            raise ValueError(
                f"Expected an image this model can be given but got shape {tuple(images.shape[-2:])}: resizing it to "
                f"{new_h}x{new_w} (the image processor's size) would need {new_h * new_w * 12 / 2**30:.0f} GiB"
            )
        sizes, cuts = [], []
        for axis, (source, target, crop) in enumerate(zip(images.shape[-2:], (new_h, new_w), self.crop)):
            period = Fraction(source, target)  # source pixels per resized pixel, exactly
            top = (target - crop) // 2
            margin = math.ceil((2 * max(float(period), 1.0) + 2) / float(period))  # in resized pixels
            q = period.denominator
            first = (max(top - margin, 0) // q) * q  # a window start on the resampling grid
            count = -(-(top + crop + margin - first) // q) * q  # resized pixels in the window
            start, length = first * period, count * period  # integers: first and count are multiples of q
            if target <= 4 * crop or start + length > source:
                sizes.append(target)
                cuts.append(None)
                continue
            images = images.narrow(images.ndim - 2 + axis, int(start), int(length))
            sizes.append(count)
            cuts.append(top - first)
        images = self._resize(images, sizes[0], sizes[1])
        for axis, cut in enumerate(cuts):
            if cut is not None:
                images = images.narrow(images.ndim - 2 + axis, cut, self.crop[axis])
        return images

    def _resize(self, images: Tensor, height: int, width: int) -> Tensor:
        antialias = self.interpolation != "nearest"
        images = F.interpolate(images, size=(height, width), mode=self.interpolation, antialias=antialias)
        return images.clamp_(0.0, 1.0)

    def _constants(self, device: torch.device) -> tuple[Tensor, Tensor]:
        # Built once per device: a fresh torch.tensor(..., device="cuda") is a blocking copy.
        cache = self.__dict__.setdefault("_cache", {})
        if device not in cache:
            mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1).to(device)
            std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1).to(device)
            cache[device] = (mean, std)
        return cache[device]


def _center_crop(images: Tensor, crop: tuple[int, int]) -> Tensor:
    crop_h, crop_w = crop
    height, width = images.shape[-2:]
    if crop_h > height or crop_w > width:
        # Pad symmetrically with zeros first, as the Hugging Face processor does.
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        images = F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        height, width = images.shape[-2:]
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return images[..., top : top + crop_h, left : left + crop_w]


def _as_dict(value: Any) -> dict:
    if value is None:
        return {}
    if isinstance(value, int):
        return {"height": value, "width": value}
    if isinstance(value, dict):
        return value
    return {k: getattr(value, k) for k in ("shortest_edge", "height", "width") if getattr(value, k, None)}


def _triple(values: Any) -> tuple[float, float, float]:
    values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    if len(values) == 1:
        values = values * 3
    return values[0], values[1], values[2]
