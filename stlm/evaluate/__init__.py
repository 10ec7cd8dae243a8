"""Scoring forecast files against the truth with the training metrics: ``python -m stlm.evaluate forecasts=PATH``.

See docs/forecasting.md. Files from other models in the same layout (:mod:`stlm.forecast.layout`) score too:
name their truth with ``dataset=NAME``.
"""

from stlm.evaluate.job import run_evaluation

__all__ = ["run_evaluation"]
