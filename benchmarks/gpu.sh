#!/usr/bin/env bash
# The prepared GPU check, in stages with their own time limits (one failing does not stop the
# next). One call of the lent GPU machine may run 600 s, so the stages come in groups:
#
#   bash benchmarks/gpu.sh                 capture-test, table-capture, table-eager (<= 9 min)
#   GPU_STAGES="teacher bench-capture" bash benchmarks/gpu.sh                        (<= 7 min)
#   GPU_STAGES=accuracy bash benchmarks/gpu.sh                                       (<= 5 min)
#   GPU_STAGES=bench bash benchmarks/gpu.sh                                          (<= 3 min)
#
#   capture-test   tests/test_capture.py: the captured step against the eager step, the run's
#                  generator advanced by each replay, the CUDA trainer's bf16 teacher (needs
#                  Fashion-MNIST: Debian's package or data/fashion-mnist/);
#   teacher        benchmarks/teacher_forward.py: the frozen teacher's forward alone (CLIP
#                  ViT-B/32, batch 64): fp32 or bf16 weights, eager, CUDA graph, torch.compile;
#   bench-capture  the paper preset (CIFAR-100 shapes, CLIP ViT-B/32 with random weights,
#                  resnet8x4, batch 64) with the captured step against the reference loop,
#                  N = 1, 2, 4 processes, and a torch.profiler table of egalib's step;
#   table-capture  the paper preset with a teacher table of every view of TABLE_IMAGES (500)
#                  images: its build time and rate, the captured step with no teacher in it
#                  against the reference loop, N = 1, 2, 4, and the projected cell and
#                  architectures table (issue #15);
#   table-eager    the same with egalib's eager step;
#   accuracy       both loops trained on the demo data for 6 epochs with 2 seeds (captured
#                  egalib loop), test top-1 compared;
#   bench          the paper preset with egalib's eager step.
#
# Results go to $OUT when it is set (the lent GPU machine's output folder), else to
# benchmarks/results/: <device>-capture.json, <device>-teacher.json, <device>-accuracy.json,
# <device>.json, <device>-table-capture.json, <device>-table.json, profile-capture.txt,
# profile.txt, one log per stage and gpu.txt.
# Environment overrides, for a dry run elsewhere: BENCH_DEVICE, BENCH_STEPS, BENCH_WORKERS,
# BENCH_PROCESSES, BENCH_ACCURACY ("EPOCHS SEEDS"), TABLE_IMAGES, TEACHER_ARGS (extra arguments
# of the teacher stage), PYTHON; extra arguments go to the benchmark stages (e.g. --warmup 1
# --batch-size 8 for a quick try on a CPU).
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
DEVICE=${BENCH_DEVICE:-cuda}
STEPS=${BENCH_STEPS:-200}
WORKERS=${BENCH_WORKERS:-8}  # the CRD code base's default num_workers
read -r -a PROCESSES <<<"${BENCH_PROCESSES:-1 2 4}"
read -r EPOCHS SEEDS <<<"${BENCH_ACCURACY:-6 2}"
TABLE_IMAGES=${TABLE_IMAGES:-500}
read -r -a STAGES <<<"${GPU_STAGES:-capture-test table-capture table-eager}"
RESULTS=${OUT:-benchmarks/results}
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# What the stages import, as module:requirement. A missing one is installed from wheels carried
# in .whl/ when there are any (a machine that reaches no registry), else from the registry.
missing=()
for pair in "torch:torch==2.14.1" "torchvision:torchvision==0.29.1" "numpy:numpy" "tqdm:tqdm" \
  "PIL:pillow" "pandas:pandas" "pytest:pytest" "open_clip:open_clip_torch>=3.3"; do
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
  "$PY" -c "import torch, torchvision, numpy, tqdm, PIL, pandas, pytest, open_clip" || {
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
  nproc
} | tee "$RESULTS/gpu.txt"

stage() {  # stage NAME SECONDS COMMAND...: if asked for, run it with a time limit and log it
  local name=$1 limit=$2
  shift 2
  [[ " ${STAGES[*]} " == *" $name "* ]] || return 0
  echo "== $name (at most $limit s): $*"
  local began=$SECONDS
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$RESULTS/$name.log"
  echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - began)) s" | tee -a "$RESULTS/gpu.txt"
}

slug=$("$PY" -c "import sys, torch; sys.path.insert(0, 'benchmarks'); from report import \
device_slug; from egalib.experiments import device_name; d = torch.device('$DEVICE'); \
print(device_slug(d.type, device_name(d), torch.get_num_threads()))")
# The benchmark is a script beside the library, not a command of `python -m egalib`.
BENCH=("$PY" benchmarks/bench.py --preset paper --device "$DEVICE" --steps "$STEPS"
  --workers "$WORKERS" --processes "${PROCESSES[@]}" --timeout 120 "$@")
stage capture-test 80 "$PY" -m pytest -q -x tests/test_capture.py
stage table-capture 240 "${BENCH[@]}" --capture --teacher-table "$TABLE_IMAGES" \
  --out "$RESULTS/$slug-table-capture.json"
stage table-eager 200 "${BENCH[@]}" --teacher-table "$TABLE_IMAGES" \
  --out "$RESULTS/$slug-table.json"
# shellcheck disable=SC2086 # TEACHER_ARGS is a list of words
stage teacher 180 "$PY" benchmarks/teacher_forward.py --device "$DEVICE" \
  --variants fp32 bf16 bf16-graph bf16-compile-graph --out "$RESULTS/$slug-teacher.json" \
  ${TEACHER_ARGS:-}
stage bench-capture 200 "${BENCH[@]}" --capture --out "$RESULTS/$slug-capture.json" \
  --profile "$RESULTS/profile-capture.txt"
# the accuracy runs train on the demo data whatever the preset: cpu-demo's throughput is quick
stage accuracy 300 "$PY" benchmarks/bench.py --preset cpu-demo --device "$DEVICE" --steps 20 \
  --workers "$WORKERS" --processes 1 --capture --accuracy-epochs "$EPOCHS" \
  --accuracy-seeds "$SEEDS" --out "$RESULTS/$slug-accuracy.json" "$@"
stage bench 180 "${BENCH[@]}" --out "$RESULTS/$slug.json" --profile "$RESULTS/profile.txt"
