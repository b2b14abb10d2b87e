"""Fault injection for subprocess runs of the command line (on ``PYTHONPATH`` only in tests).

``CLIP_METRIC_FAULT="module:attribute:rank:kind"`` replaces ``module.attribute`` (a function, or
``Class.method``) in every process by one that fails on ``rank`` of the default process group
(0 without one): ``raise`` raises a RuntimeError, ``exit`` ends the process with ``os._exit(9)``,
``cli`` raises the command line's CliError.
"""

import os

_SPEC = os.environ.get("CLIP_METRIC_FAULT")


def _install(spec):
    import functools
    import importlib

    module_name, attribute, rank, kind = spec.split(":")
    module = importlib.import_module(module_name)
    owner, name = module, attribute
    if "." in attribute:
        class_name, name = attribute.split(".")
        owner = getattr(module, class_name)
    original = getattr(owner, name)

    @functools.wraps(original)
    def faulty(*args, **kwargs):
        import torch.distributed as dist

        current = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if current == int(rank):
            message = f"INJECTED FAULT in {name} on rank {current}"
            if kind == "exit":
                os._exit(9)
            if kind == "cli":
                from clip_metric.cli._common import CliError

                raise CliError(message)
            raise RuntimeError(message)
        return original(*args, **kwargs)

    setattr(owner, name, faulty)


if _SPEC:
    _install(_SPEC)
