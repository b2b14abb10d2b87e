"""Lightning's two namespaces: ``lightning.pytorch`` and the standalone ``pytorch_lightning``.

``pip install lightning`` installs both, and they are two copies of one code base:
``pytorch_lightning.Callback`` is not ``lightning.pytorch.Callback``, and each namespace's
helpers (``is_overridden``, the ``isinstance`` checks of its Trainer) only know their own
classes. Many Stable Diffusion training scripts use ``pytorch_lightning``. The callback is a
subclass of both ``Callback`` classes, so either Trainer takes it, and it reads the trainer and
the module through the classes of the namespace they come from.
"""

from __future__ import annotations

import importlib
import sys
from importlib import metadata

import lightning.pytorch
import lightning_utilities.core.rank_zero as _rank_zero
from lightning_utilities.core.overrides import is_overridden as _is_overridden

PRIMARY = "lightning.pytorch"
STANDALONE = "pytorch_lightning"
# Where each class lives inside a namespace.
_MODULES = {
    "Callback": "",
    "LightningModule": "",
    "Trainer": "",
    "EarlyStopping": ".callbacks",
    "ModelCheckpoint": ".callbacks",
    "RichProgressBar": ".callbacks",
    "TQDMProgressBar": ".callbacks",
    "TensorBoardLogger": ".loggers",
    "WandbLogger": ".loggers",
    "MisconfigurationException": ".utilities.exceptions",
}


def _standalone_version() -> str | None:
    try:
        return metadata.version("pytorch_lightning")
    except metadata.PackageNotFoundError:
        return None


def _import_standalone() -> bool:
    """Import ``pytorch_lightning`` 2.x if it is installed; whether it is now loaded."""
    if STANDALONE in sys.modules:
        return True
    version = _standalone_version()
    if version is None or int(version.split(".")[0]) < 2:
        return False  # 1.x has other hooks; a Trainer of it is refused in setup
    # Importing a namespace points Lightning's info logger at that namespace's logger; keep it
    # where it was, so a lightning.pytorch run logs (and is silenced) as without this import.
    log = _rank_zero.log
    try:
        importlib.import_module(STANDALONE)
    except ImportError:
        return False
    finally:
        _rank_zero.log = log
    return True


STANDALONE_LOADED = _import_standalone()


def callback_bases() -> tuple[type, ...]:
    """The ``Callback`` classes the callback derives from: one per installed namespace."""
    bases: list[type] = [lightning.pytorch.Callback]
    if STANDALONE_LOADED:
        bases.append(sys.modules[STANDALONE].Callback)
    return tuple(bases)


def namespace_of(obj: object) -> str:
    """``"lightning.pytorch"`` or ``"pytorch_lightning"``: where the class of ``obj`` (a Trainer, a module) comes from."""
    for cls in type(obj).__mro__:
        module = cls.__module__ or ""
        if module == STANDALONE or module.startswith(STANDALONE + "."):
            return STANDALONE
        if module == PRIMARY or module.startswith(PRIMARY + "."):
            return PRIMARY
    return PRIMARY


def lightning_class(namespace: str, name: str) -> type:
    """The class ``name`` (``"ModelCheckpoint"``, ...) of ``namespace``."""
    return getattr(importlib.import_module(namespace + _MODULES[name]), name)


def lightning_classes(name: str) -> tuple[type, ...]:
    """The class ``name`` of every loaded namespace, for ``isinstance``."""
    loaded = [ns for ns in (PRIMARY, STANDALONE) if ns in sys.modules]
    return tuple(lightning_class(ns, name) for ns in loaded)


def is_overridden(method_name: str, module: object) -> bool:
    """Whether ``module`` (a LightningModule of either namespace) overrides ``method_name``."""
    return _is_overridden(method_name, module, lightning_class(namespace_of(module), "LightningModule"))
