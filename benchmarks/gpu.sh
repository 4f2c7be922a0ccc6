#!/usr/bin/env bash
# The prepared GPU check: egalib's benchmark, paper preset (CIFAR-100 shapes, CLIP ViT-B/32 with
# random weights, resnet8x4, batch 64), on one CUDA GPU, in about 6 minutes.
#
#   bash benchmarks/gpu.sh            from the repository root (any folder works)
#
# Results go to $OUT when it is set (the lent GPU machine's output folder), else to
# benchmarks/results/: <device>.json, bench-<preset>.log and gpu.txt. Environment overrides, for
# a dry run elsewhere: BENCH_PRESET, BENCH_DEVICE, BENCH_STEPS, BENCH_WORKERS, BENCH_PROCESSES,
# BENCH_TIMEOUT (seconds for the whole benchmark), PYTHON; extra arguments go to the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
PRESET=${BENCH_PRESET:-paper}
DEVICE=${BENCH_DEVICE:-cuda}
STEPS=${BENCH_STEPS:-200}
WORKERS=${BENCH_WORKERS:-8}  # the CRD code base's default num_workers
read -r -a PROCESSES <<<"${BENCH_PROCESSES:-1 2 4}"
TIMEOUT=${BENCH_TIMEOUT:-330}
RESULTS=${OUT:-benchmarks/results}
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# What the benchmark imports, as module:requirement. A missing one is installed from wheels
# carried in .whl/ when there are any (a machine that reaches no registry), else from the registry.
missing=()
for pair in "torch:torch==2.14.1" "torchvision:torchvision==0.29.1" "numpy:numpy" "tqdm:tqdm" \
  "PIL:pillow" "open_clip:open_clip_torch>=3.3"; do
  "$PY" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
  echo "gpu.sh: installing ${missing[*]}"
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/egalib-site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/egalib-site"
  else
    timeout 300 "$PY" -m pip install -q "${missing[@]}"
  fi
  "$PY" -c "import torch, torchvision, numpy, tqdm, PIL, open_clip" || {
    echo "gpu.sh: still missing after install: see the import error above" >&2
    exit 3
  }
fi

{
  date -u +%FT%TZ
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader || echo "no nvidia-smi"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"
} | tee "$RESULTS/gpu.txt"

# `-m egalib.bench` is `python -m egalib bench`, without going through the other subcommands.
timeout -k 10 "$TIMEOUT" "$PY" -m egalib.bench --preset "$PRESET" --device "$DEVICE" \
  --steps "$STEPS" --workers "$WORKERS" --processes "${PROCESSES[@]}" \
  --timeout "$((TIMEOUT / 2))" --out "$RESULTS/" "$@" 2>&1 | tee "$RESULTS/bench-$PRESET.log"
