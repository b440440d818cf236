#!/usr/bin/env bash
# The PyTorch engine on a CUDA machine that has PyTorch but no Node and no network, as it is: the
# engine's tests (python/tests: estimators against closed forms, on the CPU and on CUDA), then the
# engine against a plain PyTorch loop of the same model on CUDA, with κ on CUDA against the CPU's.
# usage: bash bench/gpu-check.sh [STEPS]     (PYTHON=... to name the interpreter; default python3)
# (bench/engine_torch.py runs 3 interleaved rounds and reports medians; see its --help)
# Writes gpu-check-<time>.json (the JSON line of bench/engine_torch.py) to $OUT when set (the device
# machine's folder that comes back), else to bench/results, and prints a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STEPS=${1:-300}
"$PY" -c 'import torch, websockets, pytest; assert torch.cuda.is_available(), "torch sees no CUDA GPU"; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")'
echo "=== pytest (python/tests)"
"$PY" -m pytest -q -p no:cacheprovider python/tests
echo "=== engine vs plain PyTorch loop on cuda (${STEPS} steps each)"
results=${OUT:-bench/results}
mkdir -p "$results"
out="$results/gpu-check-$(date -u +%Y%m%dT%H%M%SZ).json"
"$PY" bench/engine_torch.py --device cuda --steps "$STEPS" | tee "$out"
"$PY" - "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"device {r['backend']['device']}: plain {r['plainMsPerStep']:.3f} ms/step, engine {r['engineMsPerStep']:.3f} ms/step")
print(f"instrumentation at α = 0: {100 * r['instrumentationFraction']:+.1f} % (goal ≤ 5 %); with a client attached {100 * r['attachedInstrumentationFraction']:+.1f} %")
print(f"κ monitoring at the defaults (every 10 steps, probe 16): {100 * r['monitoringFraction']:+.1f} % in the run (goal ≤ 5 %), {100 * r['monitoringFractionBetweenRuns']:+.1f} % between runs")
print(f"regularized step (α = 0.01, κ measured every step): {r['regularizedCost']:.2f}× the unregularized engine step")
k = r["kappaCpuVsCuda"]
print(f"κ on CUDA vs CPU, same weights: largest relative difference {k['maxRelativeDifference']:.2e}")
ok = k["maxRelativeDifference"] <= 1e-4
print("κ matches" if ok else "κ on CUDA DIFFERS from the CPU figures")
sys.exit(0 if ok else 1)
PY
