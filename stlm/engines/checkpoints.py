"""Load a trained forecaster from a training checkpoint, with what it needs to run on raw data.

A checkpoint written by ``stlm.train`` holds the model weights (``state_dict``, prefixed ``model.``) and the
``stlm`` metadata: the resolved configuration, the data spec and the fitted scaler. Rebuilding needs no data:
the model is instantiated from the configuration and the spec, and every fitted buffer (the seasonal profile)
comes from the weights. Loading never executes code from the file (``torch.load(weights_only=True)``).

The **fingerprint** is a hash of the weights and the spec: state files of a streaming forecaster carry it, so a
state can never be loaded into a different model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from stlm.data.scalers import StandardScaler
from stlm.data.spec import DataSpec
from stlm.models.build import build_model

MODEL_PREFIX = "model."


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the path and the fix in the message."""


@dataclass
class TrainedModel:
    model: nn.Module  # in eval mode, on CPU
    spec: DataSpec
    scaler: StandardScaler
    config: dict[str, Any]  # the resolved training configuration
    fingerprint: str
    path: Path
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)  # the checkpoint's ``stlm`` entry


SPEC_ARRAYS = ("adjacency", "node_coords", "node_features")


def spec_arrays(spec: DataSpec) -> dict[str, torch.Tensor]:
    """The spec's arrays (graph, token coordinates, static features), which :meth:`DataSpec.to_dict` leaves out,
    as tensors for the checkpoint: a model built from the spec (the grid model's static features) needs them."""
    return {name: torch.from_numpy(np.asarray(value)) for name in SPEC_ARRAYS if (value := getattr(spec, name)) is not None}


def spec_from_dict(data: dict, arrays: dict[str, torch.Tensor] | None = None) -> DataSpec:
    """Inverse of :meth:`DataSpec.to_dict` (lists back to tuples; keys this version does not know are ignored),
    with the arrays of :func:`spec_arrays` when the checkpoint has them."""
    names = {f.name for f in dataclasses.fields(DataSpec)}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    fields.update({k: v.numpy() for k, v in (arrays or {}).items() if k in names})
    return DataSpec(**fields)


def model_fingerprint(model: nn.Module, spec: DataSpec) -> str:
    """sha256 (16 hex digits) of the spec and every weight and buffer, in name order."""
    digest = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def read_checkpoint(path: Path, what: str) -> dict:
    """The checkpoint dict at ``path``, read without executing code; ``what`` names the setting in errors."""
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist; pass the best.ckpt or last.ckpt of a training run")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, wrong format, or a pickle that needs code to load
        raise CheckpointError(
            f"{what} {path} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:200]}); it may be "
            "truncated or not a checkpoint written by stlm.train; use another checkpoint of the run (last.ckpt)"
        ) from err


def model_weights(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The forecaster's weights in a training checkpoint (the engine's ``model.`` prefix removed)."""
    state = checkpoint.get("state_dict", {}) if isinstance(checkpoint, dict) else {}
    return {k[len(MODEL_PREFIX):]: v for k, v in state.items() if k.startswith(MODEL_PREFIX)}


def load_trained_model(path: str | Path) -> TrainedModel:
    """The model of a training checkpoint, rebuilt and in eval mode (see the module docstring)."""
    path = Path(path).expanduser().resolve()
    checkpoint = read_checkpoint(path, what="checkpoint")
    meta = checkpoint.get("stlm") if isinstance(checkpoint, dict) else None
    if not meta or "config" not in meta or "spec" not in meta:
        raise CheckpointError(f"checkpoint {path} has no stlm metadata (config, spec, scaler): was it written by stlm.train?")
    spec = spec_from_dict(meta["spec"], meta.get("spec_arrays"))
    model_cfg = OmegaConf.create(meta["config"]["model"])
    model = build_model(model_cfg, spec)
    missing, unexpected = model.load_state_dict(model_weights(checkpoint), strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not match the model its configuration builds (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}); it was written by another stlm version ({meta.get('stlm_version')})"
        )
    model.eval()
    return TrainedModel(
        model=model, spec=spec, scaler=StandardScaler.from_state_dict(meta["scaler"]), config=meta["config"],
        fingerprint=model_fingerprint(model, spec), path=path, metadata=meta,
    )


def load_weights_into(model: nn.Module, path: str | Path, skip_prefixes: tuple[str, ...] = ()) -> list[str]:
    """Copy a training checkpoint's model weights into ``model`` (fine-tuning, or a longer window of the same
    model); parameters under ``skip_prefixes`` keep their current values. Returns the names copied.

    Every other parameter must exist in both with the same shape: a mismatch is an error naming them."""
    path = Path(path).expanduser().resolve()
    source = model_weights(read_checkpoint(path, what="model.init_weights"))
    target = {k: v for k, v in model.state_dict().items() if not k.startswith(skip_prefixes)}
    source = {k: v for k, v in source.items() if not k.startswith(skip_prefixes)}
    missing, extra = sorted(set(target) - set(source)), sorted(set(source) - set(target))
    shapes = [f"{k}: {tuple(source[k].shape)} vs {tuple(v.shape)}" for k, v in target.items() if k in source and source[k].shape != v.shape]
    if missing or extra or shapes:
        raise CheckpointError(
            f"model.init_weights: {path} does not fit this model (missing {missing[:5]}, unexpected {extra[:5]}, "
            f"shapes {shapes[:5]}); use a checkpoint of the same model configuration (only the window may differ "
            "when model.head_steps is set)"
        )
    model.load_state_dict(source, strict=False)
    return sorted(source)
