"""Comparison of MLflow runs (``python -m stlm.compare``, :mod:`stlm.compare.job`): ``query`` (which runs),
``table`` (grouped by configuration, ranked), ``render`` (text, markdown, CSV) and ``plots``."""

from stlm.compare.job import compare

__all__ = ["compare"]
