"""Building a model from its config and the data's spec, with quantiles when ``model.quantiles`` asks for them.

One function for the training job and the checkpoint reader, so a model is rebuilt exactly as it was trained:

* a model with a quantile head (``quantile_head = True``: STLM, the grid model) gets the levels;
* a fitted model (no trainable parameter: last value, historical average, persistence, climatology, ...) is
  wrapped in :class:`~stlm.models.residual_bands.ResidualBands` (empirical quantiles of its training residuals);
* a trained model without a quantile head is refused, naming the ones that have one;
* ``model.ensemble=M`` wraps the model in :class:`~stlm.models.ensemble.MCDropoutEnsemble` (M members by MC
  dropout), instead of quantiles.
"""

from __future__ import annotations

from hydra.utils import instantiate

from stlm.data.spec import DataSpec
from stlm.metrics.probabilistic import parse_levels
from stlm.models.ensemble import MCDropoutEnsemble
from stlm.models.residual_bands import ResidualBands

_UNSET = object()

# Keys of a model config that this builder reads and the model's constructor never sees.
BUILDER_KEYS = ("quantiles", "ensemble")


def build_model(model_cfg, spec: DataSpec, quantiles=_UNSET):
    """The model of ``model_cfg`` (a ``_target_`` config) for ``spec``; ``quantiles`` overrides the config's
    ``quantiles`` key (null, ``default`` or a list of levels)."""
    factory = instantiate(model_cfg, _partial_=True)
    kwargs = dict(factory.keywords)
    configured = kwargs.pop("quantiles", None)
    members = kwargs.pop("ensemble", None)
    levels = parse_levels(configured if quantiles is _UNSET else quantiles)
    if members is not None:
        if levels is not None:
            raise ValueError(f"model.quantiles={configured} and model.ensemble={members}: a forecast is either quantiles "
                             "or ensemble members; set one of them to null")
        return MCDropoutEnsemble(factory.func(*factory.args, spec=spec, **kwargs), members, spec.horizon)
    if levels is None:
        return factory.func(*factory.args, spec=spec, **kwargs)
    if getattr(factory.func, "quantile_head", False):
        return factory.func(*factory.args, spec=spec, quantiles=list(levels), **kwargs)
    model = factory.func(*factory.args, spec=spec, **kwargs)
    if any(p.requires_grad for p in model.parameters()):
        raise ValueError(
            f"model.quantiles: {type(model).__name__} has no quantile head and is trained, so it cannot give bands; "
            "use model=stlm (sensors) or model=grid (grids), or a fitted baseline (last_value, historical_average, "
            "persistence, climatology), which gets bands from its training residuals"
        )
    return ResidualBands(model, levels, spec.horizon)
