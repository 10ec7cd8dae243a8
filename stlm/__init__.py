"""stlm: spatiotemporal forecasting with selective state-space models over time and attention over space.

Importing ``stlm`` is cheap: it imports neither Lightning, MLflow nor triton. Entry points:
``python -m stlm.train`` (training), and the libraries under ``stlm.data``, ``stlm.kernels``, ``stlm.nn``,
``stlm.models``, ``stlm.engines`` and ``stlm.metrics``.
"""

__version__ = "0.1.0"
