"""Input checks shared by the library: each raises a ``ValueError`` that names the argument,
what was expected and what came."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def check_tensor(
    x: object,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    channels: int | Sequence[int] | None = None,
    channel_dim: int = -3,
    value_range: tuple[float, float] | None = None,
    range_tolerance: float = 0.5,
) -> Tensor:
    """Check that ``x`` is a floating-point tensor of the expected rank, channels and range.

    ``value_range`` is checked loosely (values may exceed it by ``range_tolerance``): GAN
    outputs overshoot slightly, but an image in 0..255 passed where 0..1 is expected must not.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if torch.jit.is_tracing():
        return x  # an exported graph cannot keep Python checks, and tracing warns about each one
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dimensions, "
                f"got shape {tuple(x.shape)}"
            )
    if channels is not None:
        allowed_c = (channels,) if isinstance(channels, int) else tuple(channels)
        if x.shape[channel_dim] not in allowed_c:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed_c))} channels in dimension "
                f"{channel_dim}, got shape {tuple(x.shape)}"
            )
    if value_range is not None and x.numel() > 0:
        lo, hi = value_range
        with torch.no_grad():
            xmin, xmax = float(x.min()), float(x.max())
        if xmin < lo - range_tolerance or xmax > hi + range_tolerance:
            raise ValueError(
                f"{name} must have values in [{lo}, {hi}], got values in [{xmin:.4g}, {xmax:.4g}]"
                + (" (an 8-bit image? divide by 255)" if xmax > 2 and hi <= 1 else "")
            )
    return x


def check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    """Raise unless ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_broadcast(x: Tensor, name: str, target_shape: torch.Size, target_name: str) -> None:
    """Raise unless ``x`` broadcasts to exactly ``target_shape`` (a weight map for a loss)."""
    try:
        shape = torch.broadcast_shapes(x.shape, target_shape)
    except RuntimeError:
        shape = None
    if shape != target_shape:
        raise ValueError(
            f"{name} must broadcast to the shape of {target_name} {tuple(target_shape)}, got shape {tuple(x.shape)}"
        )


def check_finite(value: float, name: str) -> float:
    """Raise unless ``value`` is a finite number (YAML's ``.nan`` and ``.inf`` are floats)."""
    try:
        finite = not isinstance(value, bool) and math.isfinite(value)
    except TypeError:
        finite = False
    if not finite:
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def check_positive(value: float, name: str) -> float:
    """Raise unless ``value`` is finite and > 0."""
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return check_finite(value, name)


def check_non_negative(value: float, name: str) -> float:
    """Raise unless ``value`` is finite and >= 0."""
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return check_finite(value, name)


def check_fraction(value: float, name: str) -> float:
    """Raise unless ``value`` is in (0, 1]."""
    if not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return value


def check_at_least(value: int, name: str, minimum: int) -> int:
    """Raise unless ``value`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_optimizer_factory(factory: object, name: str) -> None:
    """Raise a ``ValueError`` naming ``name`` unless the settings bound in an optimizer factory (a
    ``functools.partial``, as LightningCLI builds them) that are given are valid: ``lr`` finite
    and > 0, ``betas`` two numbers in [0, 1), ``eps`` and ``weight_decay`` finite and >= 0 (torch
    would refuse them later, naming no option)."""
    settings = getattr(factory, "keywords", None) or {}
    if settings.get("lr") is not None:
        check_positive(settings["lr"], f"{name} lr")
    betas = settings.get("betas")
    if betas is not None:
        try:
            valid = len(betas) == 2 and all(not isinstance(b, bool) and 0 <= float(b) < 1 for b in betas)
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ValueError(f"{name} betas must be two numbers in [0, 1) (e.g. [0.9, 0.99]), got {betas!r}")
    for option in ("eps", "weight_decay"):
        if settings.get(option) is not None:
            check_non_negative(settings[option], f"{name} {option}")


def check_optimizer_lr(optimizer: object, name: str) -> None:
    """Raise unless each param group of ``optimizer`` has a finite learning rate > 0."""
    for group in getattr(optimizer, "param_groups", []):
        lr = group.get("lr")
        check_positive(float(lr) if isinstance(lr, Tensor) else lr, f"{name} lr")


def check_odd_window(window_size: int, name: str, height: int | None = None, width: int | None = None) -> int:
    """Raise unless ``window_size`` is an odd integer >= 1 that fits in an image of the given size."""
    if not isinstance(window_size, int) or isinstance(window_size, bool) or window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"{name} must be an odd integer >= 1, got {window_size!r}")
    if height is not None and width is not None and (window_size > height or window_size > width):
        raise ValueError(
            f"{name}={window_size} is larger than the image ({height}x{width}); use a smaller window"
        )
    return window_size
