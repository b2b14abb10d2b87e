"""Stand-in for the ``sageattention`` package, used by the tests only.

Like the real package it exposes ``sageattn`` (defined in ``sageattention.core``), which has no
attention-mask argument: a mask cannot reach the kernel, so masked attention is silently wrong.
"""

from sageattention.core import sageattn

__all__ = ["sageattn"]
