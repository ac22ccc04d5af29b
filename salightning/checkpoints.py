"""Checkpoint and weights files: the one place that knows their layout and reads and writes them.

A checkpoint written by ``salightning fit`` is a Lightning checkpoint (``state_dict``,
``optimizer_states``, ``lr_schedulers``, ``loops``, ``hyper_parameters``, callbacks' states) with:

* ``generator_config``: ``{"class_path", "init_args"}`` of the generator, however the module was
  built (LightningCLI or Python), so :func:`load_generator` rebuilds it without the training
  config (older files: ``hyper_parameters["generator"]``);
* ``salightning``: the module's own training state (batch counter, beta2 balance, ...);
* :data:`CHECKSUM_KEY`: the SHA-256 of every tensor in it, verified on every load.

Generator weights are ``state_dict["generator.*"]``, the EMA generator's
``state_dict["generator_ema.module.*"]`` (preferred by default: :func:`generator_weights`). An export
(``salightning export``) is a plain state dict carrying :data:`CHECKSUM_KEY` as an attribute.
BasicSR's ``params_ema`` / ``params`` wrappers and DDP / ``torch.compile`` prefixes are removed by
:func:`unwrap_state_dict`; a network's own key renames live beside it as its
``checkpoint_filter(state)`` method (timm's ``checkpoint_filter_fn``), which :func:`load_pretrained` calls.

Everything is read with ``torch.load(weights_only=True)`` (or safetensors) — no code from a file
runs — and written atomically (:func:`save_atomically`). Building a generator imports only classes
of salightning or of modules the user trusts (:func:`check_trusted_classes`). This module imports
no network code, so every layer may use it.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import logging
import os
import pickle
from argparse import ArgumentError
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from salightning.paths import check_output_not_inside

log = logging.getLogger(__name__)

__all__ = [
    "CHECKSUM_KEY",
    "NonFiniteCheckpointError",
    "NotACheckpointError",
    "TRUST_HELP",
    "build_generator",
    "check_finite_checkpoint",
    "check_trusted_classes",
    "class_paths",
    "export_generator",
    "generator_config",
    "generator_weights",
    "load_checkpoint_file",
    "load_generator",
    "load_pretrained",
    "load_pretrained_generator",
    "load_state_dict_file",
    "partial_path",
    "record_wandb_run_id",
    "save_atomically",
    "tensor_digest",
    "unwrap_state_dict",
    "verify_checksum",
    "wandb_run_id",
    "weights_origin",
    "with_checksum",
]


# ------------------------------------------------------------------------------ checksums, finiteness, atomic writes
#: Top-level checkpoint key holding the SHA-256 of its tensors (see :func:`tensor_digest`).
CHECKSUM_KEY = "salightning_sha256"


class NotACheckpointError(ValueError):
    """A weights file that is not a salightning checkpoint (no ``state_dict`` or no generator config):
    an export or a plain state dict, whose architecture must be named separately."""


class NonFiniteCheckpointError(RuntimeError):
    """A checkpoint was not written because a weight or optimiser state is NaN or infinite."""


def iter_tensors(obj: Any, key: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """``(key path, tensor)`` for every tensor nested in dicts, lists and tuples of ``obj``, in a
    fixed order (dict keys sorted by their text)."""
    if isinstance(obj, torch.Tensor):
        yield key, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from iter_tensors(obj[k], f"{key}.{k}" if key else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from iter_tensors(item, f"{key}[{i}]")


def tensor_digest(obj: Any) -> str:
    """SHA-256 over the key path, dtype, shape and bytes of every tensor in ``obj``
    (:data:`CHECKSUM_KEY` itself left out)."""
    sha = hashlib.sha256()
    content = {k: v for k, v in obj.items() if k != CHECKSUM_KEY} if isinstance(obj, dict) else obj
    for key, tensor in iter_tensors(content):
        t = tensor.detach().cpu().contiguous()
        sha.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        sha.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def with_checksum(obj: dict[str, Any]) -> dict[str, Any]:
    """A shallow copy of ``obj`` with :data:`CHECKSUM_KEY` set to its :func:`tensor_digest`."""
    return {**obj, CHECKSUM_KEY: tensor_digest(obj)}


def verify_checksum(obj: Any, path: str | os.PathLike, kind: str = "checkpoint") -> None:
    """Raise a ``ValueError`` naming ``path`` when ``obj`` carries a checksum its tensors do not
    match; note (log) a file without one, which loads unverified. The checksum is a key of a
    checkpoint, or an attribute of an exported state dict (kept by ``torch.save``/``torch.load``)."""
    stored = (obj.get(CHECKSUM_KEY) if isinstance(obj, dict) else None) or getattr(obj, CHECKSUM_KEY, None)
    if stored is None:
        log.warning("note: %s %s has no content checksum (not written by salightning: another program, or torch.save of your own); loaded unverified", kind, path)
    elif stored != tensor_digest(obj):
        raise ValueError(
            f"{kind} {str(path)!r} is corrupt: its tensors do not match the SHA-256 stored in it "
            "(damaged on disk or in transfer); use another copy"
        )


def check_finite_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Raise :class:`NonFiniteCheckpointError` naming ``path`` and the first floating tensor of
    the weights (``state_dict``) or optimiser states that holds a NaN or an infinity."""
    content = {k: checkpoint[k] for k in ("state_dict", "optimizer_states") if k in checkpoint}
    for key, tensor in iter_tensors(content):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise NonFiniteCheckpointError(
                f"checkpoint {path} was not written: {key} holds NaN or infinite values (the run diverged; "
                "lower the learning rate or check the settings); earlier checkpoints are intact"
            )


class _WriteErrorRecorder:
    """A file wrapper that remembers the ``OSError`` of a failed write.

    ``torch.save`` writes through its C++ zip writer, which turns a failing ``write`` (a full
    disk) into ``RuntimeError: ... unexpected pos ...`` and drops the errno."""

    def __init__(self, file: Any) -> None:
        self._file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._file.write(data)
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable (a power cut after os.replace keeps the new name).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: Path) -> None:
    """Delete ``.partial-write.<pid>.tmp`` files in ``folder`` whose writer no longer runs (killed mid-write)."""
    for leftover in folder.glob(".*.tmp"):
        pid = leftover.name[: -len(".tmp")].rpartition(".")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            leftover.unlink(missing_ok=True)


def partial_path(target: Path) -> Path:
    """The temporary file a write of ``target`` by this process goes through. No "ckpt" in the
    name: Lightning's HPC resume parses version numbers out of any file name containing
    "hpc_ckpt_", and --ckpt_path last globs for *.ckpt."""
    return target.with_name(f".partial-write.{os.getpid()}.tmp")


def save_atomically(obj: Any, target: Path, kind: str = "checkpoint", unchanged: str = "earlier checkpoints are intact") -> None:
    """``torch.save(obj, target)`` through a temporary file in the same folder, ``fsync``ed and
    renamed over ``target``: a kill leaves the previous file or the new one. A failed write
    removes the temporary file and raises an ``OSError`` with the failure's errno, naming
    ``target`` (``kind``) and saying what is ``unchanged``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(target)
    recorder: _WriteErrorRecorder | None = None
    try:
        with open(tmp, "wb") as f:
            recorder = _WriteErrorRecorder(f)
            torch.save(obj, recorder)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        cause = err if isinstance(err, OSError) else (recorder.error if recorder is not None else None)
        if cause is None:
            raise  # not an I/O failure (e.g. an unpicklable object, KeyboardInterrupt)
        code = cause.errno if cause.errno is not None else errno.EIO
        reason = cause.strerror or str(cause)
        raise OSError(code, f"could not write {kind} {target} ({reason}, errno {errno.errorcode.get(code, code)}); {unchanged}") from err
    _fsync_dir(target.parent)
    remove_stale_temporaries(target.parent)



# ------------------------------------------------------------------------------ safe reading
def _torch_load(path: Path, map_location: Any = None) -> Any:
    """``torch.load(path, weights_only=True)``; every failure is one ``ValueError`` naming the
    file: the same refusal for a file holding code, wherever a file enters salightning."""
    try:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only load failed" in str(err).lower():
            # torch's message is long and advises weights_only=False; its line naming the refused global is the useful one
            culprit = next((line.strip() for line in str(err).splitlines() if "GLOBAL" in line), "")
            raise ValueError(
                f"{str(path)!r} was refused: it holds Python objects other than tensors and plain containers, and "
                "loading them could run code from the file (salightning reads checkpoints and weights with "
                f"weights_only=True only). {culprit}".rstrip()
            ) from err
        raise ValueError(f"{str(path)!r} is corrupt, truncated or not a checkpoint ({type(err).__name__}: {err})") from err
    except Exception as err:
        raise ValueError(f"{str(path)!r} is corrupt, truncated or not a checkpoint ({type(err).__name__}: {err})") from err


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = None) -> dict[str, Any]:
    """Read a Lightning checkpoint without executing code from it.

    Args:
        path: a local ``.ckpt`` file.
        map_location: as for ``torch.load`` (default: CPU).

    Returns:
        the checkpoint dict (it has a ``"state_dict"``).

    Raises:
        FileNotFoundError: naming the file, when it does not exist.
        ValueError: naming the file, when it holds Python objects that loading would execute
            (refused), is corrupt or truncated, or is not a Lightning checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {str(p)!r} does not exist")
    checkpoint = _torch_load(p, map_location)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"checkpoint {str(p)!r} is not a Lightning checkpoint (no 'state_dict')")
    verify_checksum(checkpoint, p)
    return checkpoint


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict from ``path`` without executing code from it (``weights_only=True``;
    ``.safetensors`` files are read with safetensors)."""
    if Path(path).suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        except Exception as err:  # corrupt or truncated
            raise ValueError(f"cannot read weights file {str(path)!r}: {err}") from err
    else:
        state = _torch_load(Path(path))
    if not isinstance(state, dict):
        raise ValueError(f"weights file {str(path)!r} does not hold a state dict (got {type(state).__name__})")
    if "state_dict" in state or CHECKSUM_KEY in state or hasattr(state, CHECKSUM_KEY):
        verify_checksum(state, path, "checkpoint" if "state_dict" in state else "weights file")
    return state


# ------------------------------------------------------------------------------ layout
# Prefixes added by DataParallel / DDP / AveragedModel and by torch.compile(module).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# AveragedModel's update counter: not a weight of the wrapped network.
NOT_WEIGHTS = ("n_averaged",)
#: Key prefixes of the generator and of its EMA in a salightning checkpoint's ``state_dict``.
GENERATOR_PREFIX = "generator."
EMA_PREFIX = "generator_ema.module."


def generator_weights(state_dict: Mapping[str, Any], use_ema: bool = True, prefix: str = GENERATOR_PREFIX) -> dict[str, Tensor]:
    """The network's tensors out of a LightningModule's ``state_dict``, prefix removed: for the
    generator, its EMA copy when the checkpoint has one and ``use_ema`` (the weights ESRGAN and
    BasicSR evaluate and release).

    Raises:
        ValueError: no key starts with the prefix (the first keys are named).
    """
    if use_ema and prefix == GENERATOR_PREFIX and any(k.startswith(EMA_PREFIX) for k in state_dict):
        prefix = EMA_PREFIX
    weights = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not weights:
        raise ValueError(f"a Lightning checkpoint without keys starting with prefix={prefix!r} (first keys: {', '.join(list(state_dict)[:5])})")
    return weights


def unwrap_state_dict(state: Mapping[str, object], prefix: str = GENERATOR_PREFIX, use_ema: bool = True) -> dict[str, Tensor]:
    """The network's tensors out of a BasicSR, Lightning or plain state dict.

    * BasicSR ``{"params_ema": ..., "params": ...}``: ``params_ema`` when present (if ``use_ema``);
    * Lightning ``{"state_dict": ...}``: :func:`generator_weights` with ``prefix``;
    * a plain state dict.

    ``module.`` / ``_orig_mod.`` prefixes and ``AveragedModel``'s ``n_averaged`` are removed;
    key names are not changed otherwise (a network's own renames: its ``checkpoint_filter``).

    Raises:
        ValueError: no recognisable state dict of tensors.
    """
    if "params_ema" in state and use_ema:
        state = state["params_ema"]
    elif "params" in state:
        state = state["params"]
    elif "state_dict" in state:
        state = generator_weights(state["state_dict"], use_ema, prefix)
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        some = ", ".join(map(str, list(state)[:5])) if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(
            "not a state dict of tensors, nor one wrapped in 'params_ema' / 'params' (BasicSR) "
            f"or 'state_dict' (Lightning); top-level keys: {some}"
        )
    out = {}
    for key, value in state.items():
        if key in NOT_WEIGHTS:
            continue
        for wrapper in WRAPPER_PREFIXES:
            if key.startswith(wrapper):
                key = key[len(wrapper) :]
        out[key] = value
    return out


def load_pretrained(model: nn.Module, path: str | os.PathLike, strict: bool = True, prefix: str = GENERATOR_PREFIX) -> nn.Module:
    """Load a weights file into ``model`` (in place) and return ``model``.

    The file is read safely (:func:`load_state_dict_file`), unwrapped (:func:`unwrap_state_dict`)
    and passed through ``model.checkpoint_filter(state)`` when the network has one (RRDBNet maps
    the ESRGAN authors' layouts). Works for every network (discriminators: ``prefix="discriminator."``
    for a Lightning checkpoint).

    Args:
        model: the network to fill.
        path: a ``.pth`` / ``.ckpt`` / ``.safetensors`` file.
        strict: when False, missing and unexpected keys are allowed (shapes must still match).
        prefix: the network's key prefix in a Lightning checkpoint.

    Raises:
        ValueError: naming the file, when it cannot be read or does not fit ``model``: missing,
            unexpected or differently shaped tensors, with the network's ``checkpoint_hints``
            (e.g. RRDBNet's ``scale`` / ``num_blocks``) where it explains the difference.
    """
    return _fill(model, load_state_dict_file(path), path, strict, prefix)


def _fill(model: nn.Module, raw: Mapping[str, Any], path: str | os.PathLike, strict: bool, prefix: str) -> nn.Module:
    """:func:`load_pretrained` with the file already read (``raw``)."""
    try:
        state = unwrap_state_dict(raw, prefix)
        state = model.checkpoint_filter(state) if hasattr(model, "checkpoint_filter") else state
    except ValueError as err:
        raise ValueError(f"cannot load {str(path)!r} into {type(model).__name__}: {err}") from err
    own = model.state_dict()
    # BatchNorm fills in its step counter itself when an older checkpoint lacks it
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} tensor(s) of another shape: " + "; ".join(mismatched[:5]))
    if strict and missing:
        problems.append(f"{len(missing)} missing key(s): " + ", ".join(missing[:5]))
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): " + ", ".join(unexpected[:5]))
    if problems:
        hints = model.checkpoint_hints(state) if hasattr(model, "checkpoint_hints") else []
        raise ValueError(f"cannot load {str(path)!r} into {type(model).__name__}: " + "; ".join([*hints, *problems]))
    model.load_state_dict(state, strict=strict)
    return model


def weights_origin(raw: Mapping[str, Any], prefix: str = GENERATOR_PREFIX) -> str:
    """Which weights of a file :func:`unwrap_state_dict` takes (its default ``use_ema``), in words:
    e.g. "the EMA generator of a salightning checkpoint", "BasicSR's params_ema (EMA)"."""
    if "params_ema" in raw:
        return "BasicSR's params_ema (EMA)"
    if "params" in raw:
        return "BasicSR's params (no EMA)"
    if "state_dict" in raw:
        ema = prefix == GENERATOR_PREFIX and any(k.startswith(EMA_PREFIX) for k in raw["state_dict"])
        return f"the {'EMA generator' if ema else 'generator (no EMA)'} of a Lightning checkpoint"
    return "a plain state dict"


def load_pretrained_generator(
    path: str | os.PathLike, generator: nn.Module | None = None, trusted_modules: Sequence[str] = (), option: str = "pretrained_generator"
) -> tuple[nn.Module, str]:
    """The generator a run starts from, and a line saying what was loaded.

    With ``generator``, the file's weights are loaded into it (:func:`load_pretrained`, strict).
    Without, the generator recorded in the salightning checkpoint ``path`` (its class and
    arguments, :func:`generator_config`) is built, trusted classes only
    (:func:`check_trusted_classes`), and filled: stages chain without repeating the settings.
    The line names the file, which of its weights (EMA or not, :func:`weights_origin`), how many
    tensors and their top-level modules, and the generator with its arguments.

    Raises:
        ValueError: naming ``option`` and the file: weights that do not fit, an untrusted class,
            or no ``generator`` and a file that records none (a plain state dict or BasicSR file).
    """
    raw = load_state_dict_file(path)
    built = generator is None
    if built:
        try:
            config = generator_config(raw, path)
        except NotACheckpointError:
            raise ValueError(
                f"model.generator is not given and {option} {str(path)!r} records no generator (a plain state dict or a "
                "BasicSR file, not a checkpoint of `salightning fit`): give model.generator (class_path and init_args)"
            ) from None
        generator = build_generator(config, path, trusted_modules)
    _fill(generator, raw, path, strict=True, prefix=GENERATOR_PREFIX)
    keys = list(generator.state_dict())
    modules = list(dict.fromkeys(k.split(".", 1)[0] for k in keys))
    into = type(generator).__name__
    if built:
        into += "(" + ", ".join(f"{k}={v!r}" for k, v in (config.get("init_args") or {}).items()) + "), class and arguments from the checkpoint"
    return generator.train(), (
        f"salightning: {option}: {len(keys)} tensors ({', '.join(modules[:8])}{', ...' if len(modules) > 8 else ''}) from "
        f"{weights_origin(raw)} {str(path)!r} into {into}"
    )


def record_wandb_run_id(checkpoint: dict[str, Any], run_id: str) -> None:
    """Store the W&B run a checkpoint was written by (``checkpoint["salightning"]["wandb_run_id"]``)."""
    checkpoint.setdefault("salightning", {})["wandb_run_id"] = str(run_id)


def wandb_run_id(checkpoint: Mapping[str, Any]) -> str | None:
    """The W&B run a checkpoint was written by, or ``None`` (see :func:`record_wandb_run_id`)."""
    return checkpoint.get("salightning", {}).get("wandb_run_id")


# ------------------------------------------------------------------------------ generators
#: Help of the ``--trust_module`` option of predict, export and evaluate/test.
TRUST_HELP = (
    "modules besides salightning whose classes a checkpoint may name as its generator (importing a module "
    "runs its code; a checkpoint is never trusted to choose one)"
)


def class_paths(config: Any) -> list[str]:
    """Every ``class_path`` in a nested config (dicts and lists)."""
    if isinstance(config, dict):
        own = [config["class_path"]] if isinstance(config.get("class_path"), str) else []
        return own + [c for v in config.values() for c in class_paths(v)]
    if isinstance(config, (list, tuple)):
        return [c for v in config for c in class_paths(v)]
    return []


def check_trusted_classes(config: Any, trusted_modules: Sequence[str], source: str, allow: str = "") -> None:
    """Raise a ``ValueError`` unless every ``class_path`` in ``config`` (read from ``source``, a
    file) is a class of ``salightning`` or of a module in ``trusted_modules`` (or below it):
    importing a module runs its code, so a file never chooses which. ``allow`` says how to trust
    more (default: the ``--trust_module`` option)."""
    trusted = ("salightning", *trusted_modules)
    for class_path in class_paths(config):
        module = class_path.rpartition(".")[0]
        if not any(module == name or module.startswith(name + ".") for name in trusted):
            top = module.partition(".")[0] or class_path
            raise ValueError(
                f"{source} asks for the class {class_path!r}, which is not part of salightning; importing it would "
                "run code chosen by the file. If you trust it, allow it "
                + (allow or f"with --trust_module {top} (Python: trusted_modules=[{top!r}])")
            )


def generator_config(checkpoint: Mapping[str, Any], source: str | os.PathLike) -> dict[str, Any]:
    """The generator's ``{"class_path", "init_args"}`` recorded in a checkpoint (``source``: its
    file, named in errors): ``generator_config``, or, in files written before it existed, the
    LightningCLI config in ``hyper_parameters["generator"]``.

    Raises:
        ValueError: the checkpoint records no generator config.
    """
    config = checkpoint.get("generator_config") or checkpoint.get("hyper_parameters", {}).get("generator")
    if not isinstance(config, dict) or not isinstance(config.get("class_path"), str):
        raise NotACheckpointError(
            f"checkpoint {str(source)!r} was not written by `salightning fit` or an SRGANModule (no 'generator_config' "
            "and no generator in its hyper_parameters); build the generator yourself and use "
            "salightning.checkpoints.load_pretrained"
        )
    return config


def build_generator(config: Mapping[str, Any], source: str | os.PathLike, trusted_modules: Sequence[str] = ()) -> nn.Module:
    """Build the network ``{"class_path", "init_args"}`` named by the file ``source``, importing
    only trusted classes (:func:`check_trusted_classes`).

    Raises:
        ValueError: naming ``source``: an untrusted class, a module that cannot be imported, or
            arguments the class refuses.
    """
    check_trusted_classes(config, trusted_modules, f"checkpoint {str(source)!r}")
    for class_path in class_paths(config):
        module = class_path.rpartition(".")[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            raise ValueError(
                f"checkpoint {str(source)!r}: its generator class {class_path!r} cannot be imported: no module "
                f"named {module!r} (install it, or run where it can be imported)"
            )
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(nn.Module, "generator", fail_untyped=False)
    try:
        return parser.instantiate_classes(parser.parse_object({"generator": dict(config)})).generator
    except (ArgumentError, ImportError, ValueError, TypeError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(f"checkpoint {str(source)!r}: cannot build its generator {config['class_path']!r}: {reason}") from None


def load_generator(
    checkpoint: str | os.PathLike,
    use_ema: bool = True,
    map_location: str | torch.device = "cpu",
    trusted_modules: Sequence[str] = (),
) -> nn.Module:
    """Rebuild the generator of a salightning checkpoint and load its weights, in eval mode.

    The class and arguments come from :func:`generator_config`; only the generator is built, so
    no VGG/LPIPS weights are needed. The EMA generator is used when the checkpoint has one and
    ``use_ema`` is true. Only classes of ``salightning`` and of the modules named in
    ``trusted_modules`` are imported.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a salightning checkpoint, does not match its generator, names
            an untrusted class, or one whose module cannot be imported.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    ckpt: Any = load_state_dict_file(path)
    config = generator_config(ckpt, path)
    if "state_dict" not in ckpt:
        raise NotACheckpointError(f"checkpoint {str(path)!r} was not written by `salightning fit` (no 'state_dict')")
    generator = build_generator(config, path, trusted_modules)
    try:
        generator.load_state_dict(generator_weights(ckpt["state_dict"], use_ema))
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"checkpoint {str(path)!r}: generator weights do not match its config: {err}") from err
    return generator.eval().to(map_location)


def export_generator(
    checkpoint: str | os.PathLike, output: str | os.PathLike, use_ema: bool = True, trusted_modules: Sequence[str] = ()
) -> Path:
    """Write the generator weights of a salightning checkpoint as a plain state dict carrying its
    checksum (loadable by :func:`load_pretrained` and as ``pretrained_generator``; spandrel reads
    RRDBNet's). Refuses to overwrite an existing file or to write on or inside the checkpoint."""
    out = Path(output)
    if out.exists():
        raise FileExistsError(f"{str(out)!r} exists; choose another output path")
    check_output_not_inside([checkpoint], out, "--output")
    generator = load_generator(checkpoint, use_ema=use_ema, trusted_modules=trusted_modules)
    state = generator.state_dict()
    setattr(state, CHECKSUM_KEY, tensor_digest(state))  # an attribute: the file stays a plain state dict
    save_atomically(state, out, "export", "nothing was written")  # never a half-written file under any name
    return out
