#!/usr/bin/env bash
# GPU check of stlm's kernels (issue 3), prepared to run in one call on a machine with a CUDA GPU (an H200).
#
#   OUT=/some/dir bash scripts/device_check.sh        # from the repository root; results under $OUT
#
# Needs no network: it uses the machine's own torch, triton and pytest, and puts this checkout on PYTHONPATH
# instead of pip-installing it (pip would try to fetch stlm's other dependencies, which the kernels do not use).
# Steps, each logged to its own file so that one failure does not hide the others:
#   env.txt              GPU, driver, torch/triton versions
#   compile.log          the kernels compile for sm_90 without spills (ptxas)
#   gpu_tests.log/.xml   pytest -m gpu tests/kernels: Triton == reference in float32, bfloat16, float16
#                        (first config of each kernel: STLM_TRITON_AUTOTUNE=0; compile.log covers all configs)
#   bench_gpu.log        the GPU benchmark; its table goes to benchmarks_gpu.md (paste into docs/benchmarks.md)
#   summary.txt          exit status of every step
set -u
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
PY="${PYTHON:-python3}"

status() { echo "$1: exit $2" | tee -a "$OUT/summary.txt"; }

{
  nvidia-smi || true
  "$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__); print(torch.cuda.get_device_name())"
} > "$OUT/env.txt" 2>&1
status env $?

timeout 300 "$PY" -m stlm.kernels.triton.compile_check > "$OUT/compile.log" 2>&1
status compile_check $?

STLM_TRITON_AUTOTUNE=0 timeout 900 "$PY" -m pytest -m gpu tests/kernels -q -p no:cacheprovider -o addopts="" -rs \
  --junitxml="$OUT/gpu_tests.xml" > "$OUT/gpu_tests.log" 2>&1
status gpu_tests $?

timeout 1200 "$PY" scripts/bench_kernels.py --gpu --output "$OUT/benchmarks_gpu.md" > "$OUT/bench_gpu.log" 2>&1
status bench_gpu $?

tail -n 5 "$OUT/gpu_tests.log"
cat "$OUT/summary.txt"
