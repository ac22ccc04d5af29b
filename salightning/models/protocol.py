"""The generator contract, checked once: what training, inference and checkpoints read from a generator.

A generator is any ``nn.Module`` with three attributes:

* ``scale`` (int >= 1): the SR factor;
* ``num_frames`` (int >= 1): 1 for a single-image generator, input (B, C, h, w); more for a
  video generator, input (B, T, C, H, W) with T = ``num_frames``;
* ``input_upsampled`` (bool): True when the input frames are already bicubic-upsampled to HR size.

Its constructor config (``{"class_path": ..., "init_args": ...}``) is read from its constructor
signature and the attributes of the same names, so a checkpoint can rebuild it however the
module was built (from Python or from a config file).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, NamedTuple

from torch import nn

__all__ = ["GeneratorSpec", "constructor_config", "generator_spec"]

_PLAIN = (bool, int, float, str, type(None))


class GeneratorSpec(NamedTuple):
    """The attributes every generator has (see :func:`generator_spec`)."""

    scale: int
    num_frames: int
    input_upsampled: bool


def generator_spec(generator: nn.Module) -> GeneratorSpec:
    """Read and check the generator contract: ``scale``, ``num_frames`` and ``input_upsampled``.

    Args:
        generator: the network that maps LR inputs to SR images.

    Returns:
        :class:`GeneratorSpec` with ``scale`` and ``num_frames`` as ints, ``input_upsampled`` as bool.

    Raises:
        TypeError: ``generator`` is not an ``nn.Module``, lacks one of the attributes, or one
            has a value of the wrong kind; the message names the class and the attribute.

    Example:
        >>> from salightning.models import RRDBNet
        >>> generator_spec(RRDBNet(num_blocks=1, scale=2))
        GeneratorSpec(scale=2, num_frames=1, input_upsampled=False)
    """
    if not isinstance(generator, nn.Module):
        raise TypeError(f"generator must be an nn.Module, got {type(generator).__name__}")
    name = type(generator).__qualname__
    values = {}
    for attribute in GeneratorSpec._fields:
        if not hasattr(generator, attribute):
            raise TypeError(
                f"generator {name} has no attribute {attribute!r}; a generator must set scale (SR factor), "
                "num_frames (1 for images) and input_upsampled (True when its input is bicubic-upsampled) in __init__"
            )
        values[attribute] = getattr(generator, attribute)
    for attribute in ("scale", "num_frames"):
        value = values[attribute]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TypeError(f"generator {name}.{attribute} must be an integer >= 1, got {value!r}")
    if not isinstance(values["input_upsampled"], bool):
        raise TypeError(f"generator {name}.input_upsampled must be a bool, got {values['input_upsampled']!r}")
    return GeneratorSpec(**values)


def _is_plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _public_class_path(cls: type) -> str:
    # The package that re-exports a class names it as users write it (salightning.models.RRDBNet).
    module = cls.__module__
    parent = module.rpartition(".")[0]
    if parent and getattr(importlib.import_module(parent), cls.__qualname__, None) is cls:
        module = parent
    return f"{module}.{cls.__qualname__}"


def constructor_config(generator: nn.Module) -> dict[str, Any]:
    """The constructor config ``{"class_path": ..., "init_args": {...}}`` that rebuilds ``generator``.

    Every argument of ``type(generator).__init__`` is read from the attribute of the same name,
    so a generator must store its constructor arguments (all salightning models do). Only plain
    values (numbers, strings, booleans, None and lists / dicts of them) are accepted.

    Args:
        generator: an ``nn.Module`` whose class is importable by its module and name.

    Returns:
        A dict of plain values, what a ``class_path`` / ``init_args`` config node holds.

    Raises:
        TypeError: an argument has no attribute of its name, or its value is not plain, or the
            class is not importable (defined in a function); the message names both.

    Example:
        >>> from salightning.models import RRDBNet
        >>> constructor_config(RRDBNet(num_blocks=1, scale=2))["init_args"]["num_blocks"]
        1
    """
    cls = type(generator)
    if "<locals>" in cls.__qualname__:
        raise TypeError(
            f"generator class {cls.__module__}.{cls.__qualname__} is defined inside a function: a checkpoint cannot name it; "
            "define it in a module"
        )
    class_path = _public_class_path(cls)
    init_args: dict[str, Any] = {}
    for param in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if not hasattr(generator, param.name):
            raise TypeError(
                f"generator {class_path} does not keep its constructor argument {param.name!r} as an attribute of that "
                f"name, so a checkpoint cannot record how to rebuild it; set self.{param.name} = {param.name} in __init__"
            )
        value = getattr(generator, param.name)
        if isinstance(value, tuple):
            value = list(value)
        if not _is_plain(value):
            raise TypeError(
                f"generator {class_path}.{param.name} is a {type(value).__name__}; a checkpoint records only plain "
                "constructor arguments (numbers, strings, booleans, None, lists and dicts of them)"
            )
        init_args[param.name] = value
    return {"class_path": class_path, "init_args": init_args}
