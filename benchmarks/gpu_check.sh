#!/usr/bin/env bash
# A check of csbot's training on a CUDA machine, meant to finish in under ten minutes from a fresh
# checkout. NOT YET RUN ON A GPU: written and tested on a CPU-only machine with --cpu-dry (below).
#
#   benchmarks/gpu_check.sh [--cpu-dry] [--events N] [--work DIR]
#
# Stages (each prints its wall time; the retrains also print the gate's verdict):
#   1. install: the README's test install, with the CUDA torch wheel from the default index
#      (`pip install torch==2.13.0`, with its nvidia-* dependencies, instead of the CPU index), into .venv-gpu
#   2. ingest the demo KB with fine-tuning on CUDA (finetune_* defaults; device = cuda)
#   3. ~1,000 simulated feedback events on the demo KB (benchmarks/gpu_check_feedback.py: questions
#      asked through the engine and stored, votes by simulated agents via bench_helpcentre's simulator),
#      imported with `csbot feedback --file`
#   4. the nightly retrain on them in fp16 (retrain_mixed_precision = fp16), composer off
#   5. the same retrain with a few composer SFT/KTO steps (retrain_composer = on,
#      retrain_composer_max_steps = 3); the composer trains in bf16 on CUDA when the card supports it
#      (training/compose_train.py picks it: no setting)
#   6. the same retrain as 4, its encoder training launched by `torchrun --nproc_per_node=1` (the
#      retrain_launcher setting: training/steps.py run_encoder_job runs `-m training.finetune JOB`
#      under it; only the encoder stages go through the launcher)
# Stages 4-6 each run on their own copy of the home made after stage 3, so each sees the same feedback.
#
# --cpu-dry: no install (the repository's .venv), device cpu, fp32, 60 events, composer stage skipped
# (minutes a step on CPU): proves the commands and the settings are right where there is no GPU.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY=0
EVENTS=1000
WORK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-dry) DRY=1; shift ;;
    --events) EVENTS="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$DRY" = 1 ] && [ "$EVENTS" = 1000 ] && EVENTS=60
WORK="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/csbot-gpu-check.XXXXXX")}"
mkdir -p "$WORK"
cd "$REPO"

TIMES=()
stage() {  # stage NAME COMMAND...: run it, print and remember its wall time
  local name="$1"; shift
  local start end
  echo "== $name" >&2
  start=$(date +%s.%N)
  "$@"
  end=$(date +%s.%N)
  local took
  took=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  echo "== $name: ${took} s" >&2
  TIMES+=("$name: ${took} s")
}

if [ "$DRY" = 1 ]; then
  VENV="$REPO/.venv"
  export CSBOT_DEVICE=cpu CSBOT_RETRAIN_MIXED_PRECISION=no
else
  VENV="$REPO/.venv-gpu"
  install() {
    python3 -m venv "$VENV"
    # The default index's wheel is the CUDA build; with its dependencies (the nvidia-* runtime wheels),
    # which the README's CPU wheel does not have, hence no --no-deps here.
    "$VENV/bin/pip" install -q torch==2.13.0
    "$VENV/bin/pip" install -q -e '.[test]'
    "$VENV/bin/python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
  }
  stage "install" install
  export CSBOT_DEVICE=cuda CSBOT_RETRAIN_MIXED_PRECISION=fp16
fi
PY="$VENV/bin/python"
CSBOT=("$PY" -m bot.cli)
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false CSBOT_RETRAIN_PROGRESS=off
export CSBOT_RETRAIN_COMPOSER=off
HOME_DIR="$WORK/home"

stage "ingest the demo KB (fine-tuning on $CSBOT_DEVICE)" \
  env CSBOT_HOME="$HOME_DIR" "${CSBOT[@]}" ingest demo/kb --quiet

feedback() {
  local line votes
  line=$(CSBOT_HOME="$HOME_DIR" "$PY" benchmarks/gpu_check_feedback.py "$HOME_DIR" --events "$EVENTS")
  echo "$line"
  votes=$(printf '%s' "$line" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["votes"])')
  CSBOT_HOME="$HOME_DIR" "${CSBOT[@]}" feedback --file "$votes" --json | tail -n 1
}
stage "$EVENTS simulated feedback events" feedback

for copy in fp16 composer torchrun; do
  cp -a "$HOME_DIR" "$WORK/home-$copy"
done

retrain() {  # retrain NAME [ENV=VALUE...]: one retrain on the home copy NAME; prints the gate's verdict
  local name="$1"; shift
  local rc=0
  env CSBOT_HOME="$WORK/home-$name" "$@" "${CSBOT[@]}" retrain --json --quiet > "$WORK/retrain-$name.json" || rc=$?
  "$PY" - "$WORK/retrain-$name.json" "$rc" <<'EOF'
import json, sys
path, rc = sys.argv[1], sys.argv[2]
lines = [x for x in open(path, encoding="utf-8").read().splitlines() if x.strip()]
report = json.loads(lines[-1]) if lines else {}
decision = report.get("decision") or {}
training = report.get("training") or {}
print(json.dumps({"exit_code": int(rc), "status": report.get("status"), "message": report.get("message"),
                  "gate": {"promote": decision.get("promote"), "reasons": decision.get("reasons"),
                           "checks": [c.get("detail") for c in decision.get("checks", [])]},
                  "timings": report.get("timings"), "encoder_training_seconds": training.get("seconds"),
                  "config": {k: (report.get("config") or {}).get(k) for k in ("device", "mixed_precision", "launcher")},
                  "composer": {k: v for k, v in (report.get("composer") or {}).items() if k != "plan"}}, default=str))
EOF
  case "$rc" in 0|3|4|6) return 0 ;; *) return "$rc" ;; esac  # rejected or nothing learned is a verdict, not a failure
}

stage "retrain, ${CSBOT_RETRAIN_MIXED_PRECISION} (composer off)" retrain fp16
if [ "$DRY" = 1 ]; then
  echo "== composer SFT/KTO steps: skipped with --cpu-dry (minutes a step on CPU)" >&2
else
  stage "retrain with 3 composer SFT/KTO steps (bf16 where supported)" \
    retrain composer CSBOT_RETRAIN_COMPOSER=on CSBOT_RETRAIN_COMPOSER_MAX_STEPS=3
fi
# torchrun is installed with torch; the launcher runs it from the venv's bin.
stage "retrain under torchrun --nproc_per_node=1" \
  retrain torchrun "CSBOT_RETRAIN_LAUNCHER=$VENV/bin/torchrun --nproc_per_node=1"

echo "== times (work folder $WORK)"
for line in "${TIMES[@]}"; do echo "  $line"; done
