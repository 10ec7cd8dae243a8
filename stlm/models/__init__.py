"""Forecasting models: the STLM forecaster and baselines, all with one contract.

Every model is built as ``Model(spec=DataSpec, **hyperparameters)`` and maps a batch (see
:mod:`stlm.data.windowing`) to scaled predictions ``[B, horizon, N, C]``; the engine inverse-scales them.
Models that are fitted from data instead of trained (historical average, seasonal naive) implement
``fit_from_data(datamodule)``.
"""
