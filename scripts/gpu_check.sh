#!/usr/bin/env bash
# One-GPU check of the scale-out presets (strategies and precision), for a machine with one NVIDIA GPU
# (H100/H200), no internet and nothing installed but torch with CUDA and the project's dependencies.
# It installs nothing: it runs the CLI from the checkout (PYTHONPATH=. python -m moslim_pl.cli).
#
#   bash scripts/gpu_check.sh            # from the repository root; estimated 3-5 minutes on one H100
#   bash scripts/gpu_check.sh --cpu      # dry run on the CPU (GPU_CHECK_DRY_RUN=1): tiny runs, no FSDP1
#
# Checks (each prints one PASS/FAIL/SKIP line with its numbers and wall time, then a summary):
#   a  RM quickstart, FSDP1 (configs/trainer/fsdp.yaml) + bf16-mixed, 1 GPU: val acc per head >= 0.9
#   c  RM quickstart, FSDP2 (configs/trainer/fsdp2.yaml) + bf16-mixed, 1 GPU: val acc per head >= 0.9
#   s  SFT quickstart, 2 epochs, bf16-mixed (the policy that b and d start from)
#   b  RLOO steps with KV-cached generation on CUDA, bf16-mixed: rollout/reward, seconds per step
#   d  RLOO steps under FSDP2, bf16-true (sharded generation on nccl)
# Environment: PYTHON (default python), GPU_CHECK_OUT for the logs (default $OUT or /tmp/moslim_gpu_check),
# GPU_CHECK_RUNS for the runs (default a fresh /tmp/moslim_gpu_check_runs.*), GPU_CHECK_BUDGET seconds
# after which the remaining checks are skipped (default 330).
# Exit status: 0 all passed, 1 a check failed, 2 dependencies missing, 3 no CUDA device.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

MODE=gpu
if [[ "${1:-}" == "--cpu" || "${GPU_CHECK_DRY_RUN:-0}" == "1" ]]; then MODE=cpu; fi
PY=${PYTHON:-python}
command -v "$PY" > /dev/null || PY=python3
OUT_DIR=${GPU_CHECK_OUT:-${OUT:-/tmp/moslim_gpu_check}}
RUNS=${GPU_CHECK_RUNS:-$(mktemp -d /tmp/moslim_gpu_check_runs.XXXXXX)}
BUDGET=${GPU_CHECK_BUDGET:-330}
START=$SECONDS
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} MOSLIM_DEBUG=1
mkdir -p "$OUT_DIR/logs" "$RUNS"
RESULTS=()
FAILED=0

echo "== moslim-pl gpu_check ($MODE mode), $(date -u +%FT%TZ), logs: $OUT_DIR/logs, runs: $RUNS"
echo "== dependencies ($PY)"
"$PY" - "$MODE" << 'EOF'
import importlib
import sys

mode = sys.argv[1]
missing = []
for name in ("torch", "lightning", "transformers", "torchmetrics", "jsonargparse", "datasets",
             "tensorboard", "safetensors", "tokenizers", "matplotlib", "yaml"):
    try:
        module = importlib.import_module(name)
        print(f"  {name:13s} {getattr(module, '__version__', '?')}")
    except Exception as err:
        missing.append(f"{name} ({type(err).__name__}: {err})")
try:
    import peft

    print(f"  {'peft':13s} {peft.__version__}")
except ImportError:
    print("  peft          missing: only LoRA policies need it, no check here does")
try:
    from lightning.pytorch.cli import _JSONARGPARSE_SIGNATURES_AVAILABLE
    if not _JSONARGPARSE_SIGNATURES_AVAILABLE:
        missing.append("jsonargparse[signatures] extras (docstring-parser, typeshed-client)")
    import moslim_pl.cli
    import moslim_pl.modules
except Exception as err:
    missing.append(f"moslim_pl ({type(err).__name__}: {err})")
if missing:
    print("MISSING (install them; this script installs nothing):\n  " + "\n  ".join(missing))
    sys.exit(2)
import torch

print(f"  cuda available: {torch.cuda.is_available()}, devices: {torch.cuda.device_count()}")
if torch.cuda.is_available():
    print(f"  device 0: {torch.cuda.get_device_name(0)}, bf16: {torch.cuda.is_bf16_supported()}, "
          f"nccl: {torch.distributed.is_nccl_available()}")
elif mode == "gpu":
    print("NO CUDA DEVICE: run with --cpu for the dry run")
    sys.exit(3)
EOF
status=$?
if (( status != 0 )); then echo "STOP: dependency check failed (exit $status)"; exit "$status"; fi

if [[ $MODE == gpu ]]; then
  DEVICE=(--trainer.accelerator=gpu --trainer.devices=1)
  RM_SIZE=(--trainer.max_epochs=6)
  SFT_SIZE=(--trainer.max_epochs=2)
  RL_STEPS=20 RL_TOKENS=64 MIN_ACC=0.9
else
  DEVICE=(--trainer.accelerator=cpu --trainer.devices=1)
  RM_SIZE=(--trainer.max_epochs=1 --data.init_args.synthetic.num_prompts=30
           --data.init_args.synthetic.responses_per_prompt=2 --data.init_args.batch_size=8)
  SFT_SIZE=(--trainer.max_epochs=1 --data.init_args.synthetic.num_prompts=30
            --data.init_args.synthetic.responses_per_prompt=2)
  RL_STEPS=3 RL_TOKENS=16 MIN_ACC=0.0
fi
COMMON=(--trainer.enable_progress_bar=false --trainer.enable_model_summary=false)

# run_check NAME TIMEOUT_S ARGS...: moslim-pl ARGS with its log in $OUT_DIR/logs/NAME.log; sets WALL and RC
run_check() {
  local name=$1 limit=$2
  shift 2
  WALL=0 RC=0
  if (( SECONDS - START + 30 > BUDGET )); then
    RC=124
    echo "SKIP $name: $((SECONDS - START)) s spent of the ${BUDGET} s budget"
    return 1
  fi
  echo "-- $name: moslim-pl $*"
  local t0=$SECONDS
  timeout --kill-after=15 "$limit" "$PY" -m moslim_pl.cli "$@" > "$OUT_DIR/logs/$name.log" 2>&1
  RC=$?
  WALL=$((SECONDS - t0))
  if (( RC != 0 )); then
    echo "   exit $RC after ${WALL} s$( ((RC == 124)) && echo ' (timeout)'); last lines of logs/$name.log:"
    grep -v "^\s*$" "$OUT_DIR/logs/$name.log" | tail -n 20 | cut -c1-240 | sed 's/^/   | /'
  fi
  return "$RC"
}

# verdict KIND NAME RUN_DIR: prints the PASS/FAIL line (KIND rm: accuracies; rl: rollouts); exit 0 = PASS
verdict() {
  "$PY" - "$@" "$RC" "$WALL" "$MIN_ACC" "${RL_STEPS:-0}" << 'EOF'
import json
import math
import sys
from pathlib import Path

kind, name, run, rc, wall, min_acc, steps = sys.argv[1:8]
run, rc, wall, min_acc, steps = Path(run), int(rc), int(wall), float(min_acc), int(steps)
numbers, problems = [], []
if rc != 0:
    problems.append(f"exit {rc}")
try:
    from moslim_pl.evaluation.tensorboard import read_scalars

    scalars = read_scalars(run)
except Exception as err:
    scalars, problems = {}, [*problems, f"no TensorBoard scalars ({err})"]
compute = run / "compute.json"
if compute.is_file():
    record = json.loads(compute.read_text())
    numbers.append(f"peak mem {record['peak_memory_bytes'] / 2**30:.2f} GiB")
    if kind == "rl" and record["optimizer_steps"]:
        numbers.append(f"{record['wall_seconds'] / record['optimizer_steps']:.2f} s/step (fit incl. validation)")
if kind == "rm" and scalars:
    heads = sorted(k.split("/")[-1] for k in scalars if k.startswith("val/acc/"))
    accs = {h: scalars[f"val/acc/{h}"][-1] for h in heads}
    numbers.insert(0, "val acc " + ", ".join(f"{h} {a:.3f}" for h, a in accs.items()))
    if not heads:
        problems.append("no val/acc/<head>")
    problems += [f"{h} {a:.3f} < {min_acc}" for h, a in accs.items() if a < min_acc]
    try:
        from moslim_pl.models.reward_model import MultiHeadRewardModel

        rm = MultiHeadRewardModel.from_pretrained(run / "export")
        numbers.append(f"export reloads ({int(rm.stats_count)} stats rows)")
    except Exception as err:
        problems.append(f"export does not reload ({type(err).__name__}: {err})")
if kind == "rl" and scalars:
    reward = scalars.get("rollout/reward", [])
    if len(reward) != steps:
        problems.append(f"{len(reward)} rollout/reward values for {steps} steps")
    if reward:
        k = max(1, len(reward) // 4)
        numbers.insert(0, f"rollout/reward first {sum(reward[:k]) / k:.3f} last {sum(reward[-k:]) / k:.3f}")
        if not all(math.isfinite(r) for r in reward):
            problems.append("non-finite reward")
    for key in ("rollout/kl", "rollout/response_length", "val/reward"):
        if key in scalars:
            numbers.append(f"{key} {scalars[key][-1]:.3f}")
    try:
        from moslim_pl.models.backbone import load_causal_lm

        load_causal_lm(str(run / "export"))
        numbers.append("export reloads")
    except Exception as err:
        problems.append(f"export does not reload ({type(err).__name__}: {err})")
status = "FAIL" if problems else "PASS"
print(f"{status} {name}: {'; '.join(numbers + problems)}; wall {wall} s")
sys.exit(1 if problems else 0)
EOF
}

record() {  # record NAME STATUS_OF_VERDICT
  if (( $2 == 0 )); then RESULTS+=("PASS $1"); else RESULTS+=("FAIL $1"); FAILED=1; fi
}

run_dir() { echo "$RUNS/$1/$2/version_0"; }

show_val() {  # the brief's reader of results: last value of every val/ scalar
  [[ -d $1 ]] && "$PY" -m moslim_pl.evaluation.tensorboard "$1" --prefix val/ 2> /dev/null | sed 's/^/   /'
}

# ---------------------------------------------------------------------------------------- a: FSDP1
if [[ $MODE == gpu ]]; then
  run_check a 150 fit --config configs/reward_model/quickstart.yaml --config configs/trainer/fsdp.yaml \
    --trainer.devices=1 --trainer.precision=bf16-mixed "${RM_SIZE[@]}" "${COMMON[@]}" \
    --trainer.logger.init_args.save_dir="$RUNS/a"
  show_val "$(run_dir a reward_model_quickstart)"
  verdict rm "a RM quickstart FSDP1 bf16-mixed 1 GPU" "$(run_dir a reward_model_quickstart)"
  record a $?
else
  echo "SKIP a: FSDP1 needs a GPU (Lightning refuses accelerator=cpu)"
  RESULTS+=("SKIP a")
fi

# ---------------------------------------------------------------------------------------- c: FSDP2
run_check c 150 fit --config configs/reward_model/quickstart.yaml --config configs/trainer/fsdp2.yaml \
  "${DEVICE[@]}" --trainer.precision=bf16-mixed "${RM_SIZE[@]}" "${COMMON[@]}" \
  --trainer.logger.init_args.save_dir="$RUNS/c"
show_val "$(run_dir c reward_model_quickstart)"
verdict rm "c RM quickstart FSDP2 bf16-mixed 1 device" "$(run_dir c reward_model_quickstart)"
record c $?

# ------------------------------------------------------------------ s: the SFT export the policies start from
run_check s 100 fit --config configs/sft/quickstart.yaml "${DEVICE[@]}" --trainer.precision=bf16-mixed \
  "${SFT_SIZE[@]}" "${COMMON[@]}" --trainer.logger.init_args.save_dir="$RUNS/s"
SFT_EXPORT=$(run_dir s sft_quickstart)/export
if [[ -f $SFT_EXPORT/config.json ]]; then
  echo "PASS s SFT export: $(show_val "$(run_dir s sft_quickstart)" | grep val/ | tr -s ' ' | paste -sd ';'); wall $WALL s"
  RESULTS+=("PASS s")
else
  echo "FAIL s SFT export missing: RLOO falls back to moslim/tiny-llama (random weights)"
  SFT_EXPORT=moslim/tiny-llama
  RESULTS+=("FAIL s")
  FAILED=1
fi

RM_EXPORT=""
for candidate in "$(run_dir a reward_model_quickstart)/export" "$(run_dir c reward_model_quickstart)/export"; do
  if [[ -z $RM_EXPORT && -f $candidate/moslim_rm.json ]]; then RM_EXPORT=$candidate; fi
done
if [[ -z $RM_EXPORT ]]; then
  RM_EXPORT=$RUNS/tiny_rm
  echo "   no RM export from a or c: building an untrained tiny RM at $RM_EXPORT"
  "$PY" - "$RM_EXPORT" << 'EOF'
import sys

from moslim_pl.data.synthetic import DIMENSIONS
from moslim_pl.models.backbone import load_backbone, load_tokenizer
from moslim_pl.models.reward_model import MultiHeadRewardModel

tokenizer = load_tokenizer("moslim/tiny-llama")
backbone = load_backbone("moslim/tiny-llama", tokenizer=tokenizer)
MultiHeadRewardModel(backbone, DIMENSIONS, tokenizer=tokenizer).save_pretrained(sys.argv[1])
EOF
fi
# the overrides come after every --config: a later config would reset them
RL_ARGS=(--model.policy="$SFT_EXPORT" --model.reward_model="$RM_EXPORT" --model.sampling.max_new_tokens="$RL_TOKENS"
  --trainer.limit_val_batches=1 --trainer.num_sanity_val_steps=0 --trainer.log_every_n_steps=1 "${COMMON[@]}")
RLOO=configs/policy/rloo_quickstart.yaml

# ------------------------------------------------------------------------------------ b: RLOO on CUDA
run_check b 120 fit --config "$RLOO" "${RL_ARGS[@]}" "${DEVICE[@]}" --trainer.precision=bf16-mixed \
  --trainer.max_steps="$RL_STEPS" --trainer.val_check_interval="$RL_STEPS" \
  --trainer.logger.init_args.save_dir="$RUNS/b"
verdict rl "b RLOO ${RL_STEPS} steps bf16-mixed 1 device" "$(run_dir b rloo_quickstart)"
record b $?

# ------------------------------------------------------------------------------ d: RLOO under FSDP2
RL_STEPS=$((RL_STEPS / 2))
run_check d 120 fit --config "$RLOO" --config configs/trainer/fsdp2.yaml "${RL_ARGS[@]}" "${DEVICE[@]}" \
  --trainer.precision=bf16-true --trainer.max_steps="$RL_STEPS" --trainer.val_check_interval="$RL_STEPS" \
  --trainer.logger.init_args.save_dir="$RUNS/d"
verdict rl "d RLOO ${RL_STEPS} steps FSDP2 bf16-true 1 device" "$(run_dir d rloo_quickstart)"
record d $?

echo "== summary ($MODE mode, $((SECONDS - START)) s): ${RESULTS[*]}"
exit "$FAILED"
