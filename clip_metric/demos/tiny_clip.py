"""The tiny CLIP model shipped inside the package, for demos, tests and offline checks.

The package embeds a very small ``transformers.CLIPModel`` (two 64-wide transformer layers per
tower, 32x32 input images, 64-dimensional embeddings) together with the real CLIP BPE tokenizer
and a matching ``CLIPImageProcessor`` configuration. It lets the metric, the callback and their
tests run fully offline, with no download from a model hub.

The model was trained only on the procedurally drawn scenes of :mod:`clip_metric.demos.shapes`
(one to three circles, squares, triangles or crosses of one colour on a plain background, at the
left, right, top, bottom or center) and their templated captions. On such scenes it reliably
prefers the right caption over one that differs in a single attribute, but it knows nothing about
real images or other words: use it for demos, tests and offline smoke checks, never to judge
real images. Weights are stored in float16 and load as float32 by default.

``scripts/train_tiny_clip.py`` rebuilds the weights deterministically.

Example:
    >>> from transformers import CLIPModel, CLIPProcessor
    >>> from clip_metric.demos import embedded_model_path
    >>> model = CLIPModel.from_pretrained(embedded_model_path())
    >>> processor = CLIPProcessor.from_pretrained(embedded_model_path())
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["EMBEDDED_MODEL_DIR", "TOKENIZER_DIR", "embedded_model_path"]

EMBEDDED_MODEL_DIR: Path = Path(__file__).resolve().parent / "assets" / "tiny-clip"
"""Directory holding the embedded model (``config.json``, ``model.safetensors``), its
``preprocessor_config.json`` and the CLIP tokenizer files."""

TOKENIZER_DIR: Path = EMBEDDED_MODEL_DIR
"""Where the real CLIP BPE tokenizer files (``vocab.json``, ``merges.txt``) are shipped."""


def embedded_model_path() -> str:
    """Return the embedded tiny CLIP model directory as a string.

    The string can be passed anywhere a Hugging Face model name or path is accepted, for instance
    to ``CLIPModel.from_pretrained``, ``CLIPTokenizerFast.from_pretrained`` or
    ``CLIPImageProcessor.from_pretrained``.

    Returns:
        Absolute path of :data:`EMBEDDED_MODEL_DIR`.

    Raises:
        FileNotFoundError: If the model weights are missing from the installation.

    Example:
        >>> from transformers import CLIPTokenizerFast
        >>> tokenizer = CLIPTokenizerFast.from_pretrained(embedded_model_path())
    """
    weights = EMBEDDED_MODEL_DIR / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(
            f"The embedded CLIP model is missing ({weights} not found); "
            "rebuild it with scripts/train_tiny_clip.py"
        )
    return str(EMBEDDED_MODEL_DIR)
