"""Kernel tests: Triton's CPU interpreter on machines without CUDA, and the ``gpu`` marker.

``triton.jit`` decides between compiling and interpreting when it decorates a function (triton's own helpers
when triton is imported, our kernels when :mod:`stlm.kernels.triton` is). The root ``tests/conftest.py`` sets
``TRITON_INTERPRET=1`` when there is no CUDA device, before anything imports triton, so every kernel of this
suite is interpreted on CPU tensors in the same pytest process as the rest of the suite.

On a CUDA machine the variable is left alone: the kernels compile, the ``gpu`` twins run and the interpreter
twins skip. Without CUDA, every ``gpu`` test of this directory is skipped with the name of its twin's file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
HERE = Path(__file__).resolve().parent



def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; its CPU-interpreter twin runs here (test_triton_interpret.py)")
    for item in items:
        if "gpu" in item.keywords and HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


@pytest.fixture
def interpreter():
    """Run the Triton kernels on CPU tensors under the interpreter (skips where CUDA runs the gpu twins)."""
    pytest.importorskip("triton", reason="triton is not installed (pip install triton)")
    if HAS_CUDA:
        pytest.skip("CUDA is present: the gpu twin of this test runs instead of the interpreter")
    import stlm.kernels.triton.runtime as runtime

    if not runtime.INTERPRET:
        pytest.fail("stlm.kernels.triton was imported before TRITON_INTERPRET=1 was set", pytrace=False)
    return torch.device("cpu")


@pytest.fixture
def cuda():
    pytest.importorskip("triton", reason="triton is not installed (pip install triton)")
    return torch.device("cuda")
