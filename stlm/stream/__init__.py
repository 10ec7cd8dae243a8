"""Streaming forecasts: :class:`Streamer` (Python API) and ``python -m stlm.stream`` (replay or stdin)."""

from stlm.stream.streamer import Forecast, Streamer

__all__ = ["Forecast", "Streamer"]
