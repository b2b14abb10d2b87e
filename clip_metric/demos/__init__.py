"""Toy code for demos and tests, kept apart from the library (as ``lightning.pytorch.demos`` is).

- :mod:`~clip_metric.demos.shapes`: procedurally drawn scenes of coloured shapes, with captions.
- :mod:`~clip_metric.demos.tiny_clip`: the embedded tiny CLIP trained on those scenes.
- :mod:`~clip_metric.demos.text_to_image`: a tiny text-to-image LightningModule and the offline
  demo behind ``clip-metric demo``.

The library never imports this package. Importing it is cheap: the Lightning demo loads only
when asked for.
"""

from clip_metric.demos.tiny_clip import EMBEDDED_MODEL_DIR, TOKENIZER_DIR, embedded_model_path

__all__ = ["EMBEDDED_MODEL_DIR", "TOKENIZER_DIR", "embedded_model_path"]
