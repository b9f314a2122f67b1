#!/usr/bin/env bash
# GPU readiness in one command, for a CUDA machine without network, in at most 8 minutes:
#   1. the exactness tests (tests/test_exactness.py, tiny random models) on CUDA in float32 and float16;
#   2. cost curves (forward seconds vs tree nodes 1..64 on a 128-token prefix) for the Pythia-2.8B/70M and
#      Qwen2.5-1.5B/0.5B shapes with random weights, dense in float16 and bfloat16, plus int8 (dynatree_lib's
#      weight-only int8, i.e. draft_bits=8, and bitsandbytes LLM.int8() when bitsandbytes is installed);
#   3. CSVs with provenance (date, device name, torch/transformers/CUDA/bitsandbytes versions, dtype, git commit)
#      under data/results/gpu/: exactness.csv (one row per test and dtype) and costs.csv (one row per model,
#      dtype, variant and tree size), gpu_costs_<pair>_<dtype>*.csv (the form the hardware chapter reads), plus the
#      raw pytest reports and logs and gpu_check.log.
#
#   bash scripts/gpu_check.sh                    # on the GPU machine: .venv (if there) or the python on PATH must
#                                                # have a CUDA build of torch, transformers and requirements-lock
#   bash scripts/gpu_check.sh --cpu-rehearsal    # the same steps shrunk for a CPU, < 3 minutes, into a temp dir
#
# Environment: GPU_CHECK_SHRINK=1 is --cpu-rehearsal; GPU_CHECK_OUT=DIR writes there instead;
# GPU_CHECK_TEST_TIMEOUT=S stops the exactness tests after S seconds (default 210, 120 in the rehearsal).
# Exit status: 0 when every step passed, 1 when a test failed or a measurement errored (results are written either
# way), 2 when there is no CUDA device (without --cpu-rehearsal).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[ -f .venv/bin/activate ] && . .venv/bin/activate

rehearsal=${GPU_CHECK_SHRINK:-0}
for arg in "$@"; do
  case $arg in
    --cpu-rehearsal) rehearsal=1 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $arg" >&2; exit 2 ;;
  esac
done
# Nothing may reach the network: every model is built from a config in code.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [ "$rehearsal" = 1 ]; then
  device=cpu
  out=${GPU_CHECK_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
  # A slice of the exactness tests (every method on one architecture) and toy shapes: the plumbing, not the numbers.
  tests=(tests/test_exactness.py -k "test_edge_configurations_equal_greedy and qwen2 and perturbed")
  test_timeout=${GPU_CHECK_TEST_TIMEOUT:-120}
  costs=(--shrink --device cpu --dtypes float32,float16 --budget-s 60)
else
  if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: torch sees no CUDA device (torch $(python -c 'import torch; print(torch.__version__)'));" \
         "use --cpu-rehearsal to rehearse on a CPU" >&2
    exit 2
  fi
  device=cuda
  out=${GPU_CHECK_OUT:-data/results/gpu}
  tests=(tests/test_exactness.py)
  # Worst case: 210 s of tests (both dtypes at once) + 150 s of costs + the last model started before the budget
  # ran out (under a minute) + start-up: under 8 minutes.
  test_timeout=${GPU_CHECK_TEST_TIMEOUT:-210}
  costs=(--device cuda --budget-s 150)
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
log=$out/gpu_check.log
echo "gpu_check: device=$device rehearsal=$rehearsal out=$out" | tee "$log"
started=$SECONDS
status=0

# Both dtypes at once (tiny models leave the device and the CPU cores mostly idle); the costs come after, alone.
t0=$SECONDS
for dtype in float32 float16; do
  echo "gpu_check: exactness tests on $device, $dtype" | tee -a "$log"
  (
    # SIGINT at the limit: pytest stops like on Ctrl-C and still writes its report of the tests it ran.
    DYNATREE_TEST_DEVICE=$device DYNATREE_TEST_DTYPE=$dtype timeout -s INT -k 30 "$test_timeout" \
      python -m pytest -q -p no:cacheprovider "${tests[@]}" --junitxml="$out/exactness_$dtype.xml" \
      > "$out/exactness_$dtype.log" 2>&1
    echo $? > "$out/exactness_$dtype.rc"
  ) &
done
wait
junit=()
for dtype in float32 float16; do
  rc=$(cat "$out/exactness_$dtype.rc" 2>/dev/null || echo 1)
  rm -f "$out/exactness_$dtype.rc"
  tail -n 15 "$out/exactness_$dtype.log" | tee -a "$log"
  [ "$rc" = 124 ] && echo "gpu_check: $dtype tests stopped after ${test_timeout}s" | tee -a "$log"
  [ "$rc" = 0 ] || status=1
  junit+=("$dtype=$out/exactness_$dtype.xml")  # a missing report becomes a "no report" row
  echo "gpu_check: $dtype tests exit $rc" | tee -a "$log"
done
echo "gpu_check: exactness tests in $((SECONDS - t0)) s" | tee -a "$log"

t0=$SECONDS
python scripts/gpu_costs.py --out "$out" "${costs[@]}" --junit "${junit[@]}" 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
echo "gpu_check: costs in $((SECONDS - t0)) s; total $((SECONDS - started)) s; exit $status; results in $out" \
  | tee -a "$log"
exit $status
