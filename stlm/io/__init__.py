"""Input/output helpers: safe reading of pickles, forecast writers and readers, atomic writes.

Kept import-light: importing ``stlm.io`` imports nothing; import the submodule you need
(e.g. ``from stlm.io.safe_pickle import safe_load``).
"""
