"""Configuration errors caught before anything is built, reported like Hydra's own: one message naming the key.

Hydra checks that an override names an existing key, but not what the constructors will do with the values:
``model.d_model=abc`` composes fine and then fails deep inside ``torch.nn.Linear``; ``+model.d_modle=3`` fails
as an unexpected keyword in the middle of instantiation; ``dataset=csv`` without ``dataset.path`` fails when the
datamodule is being built. :func:`check_config` looks at the composed configuration once, before any data is
read, and raises :class:`ConfigError` for

* a mandatory value (``???``) that was not given;
* a key that the ``_target_`` it configures does not accept (and the constructor takes no ``**kwargs``);
* a string where the constructor accepts only numbers or booleans (``int``, ``float``, ``bool`` annotations);
* ``model.ensemble`` that is not null or an integer >= 2, or set together with ``model.quantiles``;
* ``model.quantiles`` that are not null, ``default`` or increasing levels in (0, 1) with the median (the model
  builder's own key, :data:`stlm.models.build.BUILDER_KEYS`, which no constructor sees).

It relies on the constructors' type annotations (the house style: explicit typed arguments, never ``cfg``);
anything it cannot judge (no annotation, a class, a callable, a union with other types) it leaves alone.

:class:`ConfigError` is a Hydra ``CompactHydraException``, so ``python -m stlm.train`` prints its message alone
(no traceback), exactly as Hydra prints an unknown override.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Iterator

import torch
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, ListConfig, OmegaConf

from stlm.metrics.probabilistic import parse_levels
from stlm.models.build import BUILDER_KEYS

_NUMERIC = (int, float, bool)  # with torch.Tensor: annotations under which a string cannot be meant


class ConfigError(CompactHydraException, ValueError):
    """A configuration value that cannot work; the message names the key, what is wrong and the fix."""


def _targets(node: Any, path: str) -> Iterator[tuple[str, DictConfig]]:
    """``(key path, node)`` of every node with a ``_target_``, skipping values that only point elsewhere."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node.keys():
            if OmegaConf.is_interpolation(node, key) or OmegaConf.is_missing(node, key):
                continue
            yield from _targets(node._get_node(key), f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            yield from _targets(node._get_node(i), f"{path}[{i}]")


def _signature(target: str) -> tuple[inspect.Signature, dict[str, Any]] | None:
    """The signature and resolved annotations of ``target`` (a class: its ``__init__``), or None if unknowable."""
    from hydra._internal.utils import _locate

    try:
        obj = _locate(target)
        func = obj.__init__ if inspect.isclass(obj) else obj
        signature = inspect.signature(func)
    except Exception:  # not importable here, or a builtin without a signature: Hydra will report it
        return None
    return signature, _hints(func, signature)


def _hints(func: Any, signature: inspect.Signature) -> dict[str, Any]:
    """Resolved annotations; parameter by parameter when some forward reference does not resolve."""
    try:
        return typing.get_type_hints(func)
    except Exception:  # one unresolvable forward reference fails them all: resolve each parameter below
        hints = {}
    for name, param in signature.parameters.items():
        annotation = param.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, getattr(func, "__globals__", {}))  # noqa: S307 - the library's own annotations
            except Exception:
                continue
        if annotation is not inspect.Parameter.empty:
            hints[name] = annotation
    return hints


def _members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _refuses_strings(annotation: Any) -> bool:
    """True when the annotation admits only numbers, booleans, tensors (and None): a string cannot be meant."""
    kinds = [a for a in _members(annotation) if a is not type(None)]
    return bool(kinds) and all(a in _NUMERIC or a is torch.Tensor for a in kinds)


def _set_by(node: DictConfig, key: str, path: str) -> str:
    """The key a user sets to change ``node[key]``: the target of a plain ``${a.b}`` interpolation, else itself."""
    if OmegaConf.is_interpolation(node, key):
        text = str(node._get_node(key)._value())
        if text.startswith("${") and text.endswith("}") and ":" not in text and "$" not in text[2:]:
            return text[2:-1]
    return f"{path}.{key}"


def _problems(path: str, node: DictConfig) -> Iterator[str]:
    found = _signature(str(node._target_))
    if found is None:
        return
    signature, hints = found
    params = signature.parameters
    open_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for key in map(str, node.keys()):
        if key.startswith("_") or (path == "model" and key in BUILDER_KEYS):
            continue
        if key not in params and not open_kwargs:
            valid = ", ".join(n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
            yield (f"{path}.{key}: {node._target_} has no argument {key!r} (valid: {valid}); remove it "
                   f"(~{path}.{key}) or fix its spelling")
            continue
        try:
            value = node[key]
        except Exception:  # an interpolation that resolves only in a Hydra run (hydra:...), or to a missing value
            continue
        if isinstance(value, str) and key in hints and _refuses_strings(hints[key]):
            wanted = " or ".join(getattr(a, "__name__", str(a)) for a in _members(hints[key]) if a is not type(None))
            default = params[key].default
            example = default if isinstance(default, _NUMERIC) else {int: 1, float: 0.5, bool: True}.get(_members(hints[key])[0], 1)
            user_key = _set_by(node, key, path)
            yield (f"{user_key}={value!r}: {node._target_} (argument {key!r}) expects {wanted}, got a string; "
                   f"give a number, e.g. {user_key}={example}")


def _missing(node: Any, path: str) -> Iterator[str]:
    """Keys whose value is the literal ``???`` (interpolations to them are reported once, at the source)."""
    if isinstance(node, DictConfig):
        for key in node.keys():
            child, name = node._get_node(key), f"{path}.{key}" if path else str(key)
            if OmegaConf.is_interpolation(node, key):
                continue
            if child._is_missing():
                yield name
            else:
                yield from _missing(child, name)
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            yield from _missing(node._get_node(i), f"{path}[{i}]")


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every problem found (see the module docstring); silent if none."""
    problems = [f"{key}: a required value is missing (??? in the config); add {key}=... to the command line"
                for key in _missing(cfg, "")]
    for path, node in _targets(cfg, ""):
        problems.extend(_problems(path, node))
    if "model" in cfg and "quantiles" in cfg.model:
        try:
            parse_levels(cfg.model.quantiles)
        except ValueError as err:
            problems.append(str(err))
    members = cfg.model.get("ensemble") if "model" in cfg else None
    if members is not None and (isinstance(members, bool) or not isinstance(members, int) or members < 2):
        problems.append(f"model.ensemble={members!r}: give the number of ensemble members, an integer >= 2 "
                        "(e.g. model.ensemble=16), or null for point forecasts")
    elif members is not None and cfg.model.get("quantiles") is not None:
        problems.append(f"model.ensemble={members} with model.quantiles={cfg.model.quantiles}: a forecast is either "
                        "quantiles or ensemble members; set one of them to null")
    if problems:
        raise ConfigError("Invalid configuration:\n  " + "\n  ".join(problems))


def check_launch(cfg: DictConfig, in_multirun: bool, world_size: int) -> None:
    """Refuse a Hydra multirun (``-m``) combined with multi-process training.

    Lightning's DDP launcher re-executes the command line in every new rank: with ``-m`` each rank would run the
    whole sweep again (and under ``torchrun`` every rank would launch its own sweep), so jobs multiply, fight for
    the same run directories and log duplicate MLflow runs.
    """
    trainer = cfg.get("trainer") or {}
    devices = trainer.get("devices", 1)
    many = (isinstance(devices, int) and devices > 1) or (isinstance(devices, (list, ListConfig)) and len(devices) > 1)
    many = many or int(trainer.get("num_nodes", 1) or 1) > 1 or world_size > 1
    if in_multirun and many:
        raise ConfigError(
            f"a Hydra multirun (-m) cannot train with several processes (trainer.devices={devices}, "
            f"trainer.num_nodes={trainer.get('num_nodes', 1)}, WORLD_SIZE={world_size}): Lightning's DDP launcher "
            "re-runs the command in every rank, so each rank would run the whole sweep again. Run the sweep with "
            "one process per job (trainer=cpu / trainer.devices=1), or launch each configuration on its own: "
            "torchrun --nproc_per_node=N -m stlm.train trainer=ddp trainer.devices=N ... (no -m)"
        )
