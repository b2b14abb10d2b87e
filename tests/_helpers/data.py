"""Inputs shared by several tests."""

PROMPTS = [
    "a red circle on a blue background",
    "a photo of a cat",
    "two green squares",
    "an astronaut riding a horse on the moon",
    "a bowl of soup that looks like a monster",
    "the word 'hello' written in the sand",
]
