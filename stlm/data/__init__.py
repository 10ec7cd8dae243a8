"""Data: file readers (sources), windows, temporal splits, scalers and the Lightning datamodule.

Never imports the network code (``stlm.nn``, ``stlm.models``).
"""
