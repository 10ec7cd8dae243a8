"""Compile the Triton kernels for a GPU target on any machine (no GPU needed) and report registers and spills.

    python -m stlm.kernels.triton.compile_check            # every GPU config, float32 and bfloat16
    python -m stlm.kernels.triton.compile_check --first    # the first config of each kernel only (the test)

Triton's front end and ptxas (shipped in the triton wheel) run on the CPU, so this catches what the
interpreter cannot: code that only the compiler rejects (e.g. a kernel reading a non-constexpr global),
and register pressure (spills to local memory, which cost GPU bandwidth). Run it without
``TRITON_INTERPRET=1``: under the interpreter the kernels are not compiled.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from stlm.kernels.triton.attn_bwd import _attn_bwd_dkdv_kernel, _attn_bwd_dq_kernel
from stlm.kernels.triton.attn_fwd import _attn_fwd_kernel
from stlm.kernels.triton.runtime import INTERPRET
from stlm.kernels.triton.scan_common import BLOCK_L_GPU
from stlm.kernels.triton.scan_bwd import _scan_bwd_kernel
from stlm.kernels.triton.scan_fwd import _scan_fwd_kernel
from stlm.kernels.triton.state_update import _state_update_kernel

H100_H200 = GPUTarget("cuda", 90, 32)


@dataclass
class Build:
    kernel: str
    dtype: str
    config: str
    registers: int
    spill_bytes: int


def _signature(jit, dtype: str, constexprs: dict) -> dict:
    """Pointer arguments of the data take ``dtype``; the mask is uint8, other pointers float32; scalars i32."""
    data = {"u_ptr", "delta_ptr", "z_ptr", "out_ptr", "B_ptr", "C_ptr", "dout_ptr", "du_ptr", "ddelta_ptr",
            "dz_ptr", "x_ptr", "dt_ptr", "q_ptr", "k_ptr", "v_ptr", "o_ptr", "do_ptr", "dq_ptr", "dk_ptr", "dv_ptr"}
    sig = {}
    for name in jit.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name == "mask_ptr":
            sig[name] = "*u8"
        elif name.endswith("_ptr"):
            sig[name] = f"*{dtype}" if name in data else "*fp32"
        elif name.startswith("scale"):
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


def _resources(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, local-memory spill bytes) from cuobjdump's resource usage."""
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+).*?STACK:(\d+)", out)
    if not m:
        raise RuntimeError(f"cannot read the resource usage: {out[:300]}")
    return int(m.group(1)), int(m.group(2))


def build(kernel, dtype: str, constexprs: dict, config: triton.Config) -> Build:
    jit = kernel.fn if hasattr(kernel, "configs") else kernel
    consts = {**constexprs, **config.kwargs}
    src = ASTSource(fn=jit, signature=_signature(jit, dtype, consts),
                    constexprs={(jit.arg_names.index(k),): v for k, v in consts.items()})
    compiled = triton.compile(src, target=H100_H200,
                              options={"num_warps": config.num_warps, "num_stages": config.num_stages})
    regs, spill = _resources(compiled.asm["cubin"])
    return Build(jit.__name__, dtype, f"{config.kwargs} warps={config.num_warps} stages={config.num_stages}",
                 regs, spill)


def _cases():
    """(kernel, dtype, constexprs) with every feature on: the heaviest variant of each kernel."""
    scan = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, BLOCK_N=16, BLOCK_L=BLOCK_L_GPU)
    for dtype in ("fp32", "bf16"):
        yield _scan_fwd_kernel, dtype, {**scan, "HAS_H0": True, "SAVE_CKPT": True}
        yield _scan_bwd_kernel, dtype, {**scan, "NEED_DH0": True, "HAS_DHT": True}
    attn = dict(HAS_MASK=True, HAS_BIAS=False, INPUT_PRECISION=None, WIDEN=False, BLOCK_DH=64)
    yield _attn_fwd_kernel, "bf16", attn
    yield _attn_bwd_dkdv_kernel, "bf16", {**attn, "BIAS_GRAD": False}
    yield _attn_bwd_dq_kernel, "bf16", attn
    yield _state_update_kernel, "fp32", dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, BLOCK_D=16,
                                             BLOCK_N=16)


def check(first_only: bool = False) -> list[Build]:
    if INTERPRET:
        raise RuntimeError("unset TRITON_INTERPRET: the interpreter does not compile the kernels")
    builds = []
    for kernel, dtype, constexprs in _cases():
        configs = kernel.configs if hasattr(kernel, "configs") else [triton.Config({}, num_warps=4, num_stages=1)]
        for config in configs[:1] if first_only else configs:
            builds.append(build(kernel, dtype, constexprs, config))
            b = builds[-1]
            print(f"{b.kernel:24s} {b.dtype:5s} {b.config:52s} registers={b.registers:3d} spill={b.spill_bytes}",
                  flush=True)
    return builds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--first", action="store_true", help="only the first config of each kernel")
    args = p.parse_args(argv)
    builds = check(first_only=args.first)
    spilled = [b for b in builds if b.spill_bytes]
    for b in spilled:
        print(f"SPILL: {b.kernel} {b.dtype} {b.config}: {b.spill_bytes} bytes", file=sys.stderr)
    return 1 if spilled else 0


if __name__ == "__main__":
    sys.exit(main())
