"""Inputs shared by several tests."""

PROMPTS = [
    "a red circle on a blue background",
    "a photo of a cat",
    "two green squares",
    "an astronaut riding a horse on the moon",
    "a bowl of soup that looks like a monster",
    "the word 'hello' written in the sand",
]


def save_random_image(path, seed: int = 0, size: int = 32) -> None:
    """A ``size`` x ``size`` RGB image of uniform noise, saved at ``path`` (format from its suffix)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def captioned_folder(root, count: int = 3):
    """``root/images`` holding ``img<i>.png`` with a ``img<i>.txt`` caption beside each."""
    from pathlib import Path

    folder = Path(root) / "images"
    folder.mkdir()
    for i in range(count):
        save_random_image(folder / f"img{i}.png", seed=i)
        (folder / f"img{i}.txt").write_text(f"caption {i}")
    return folder
