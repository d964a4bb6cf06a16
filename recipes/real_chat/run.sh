#!/usr/bin/env bash
# Steer a real chat model, offline on a CPU: MiniLM reward model on HelpSteer -> RLOO of
# SmolLM2-135M-Instruct (LoRA, chat template, prefixes over the RM's training prompts only) -> sweep of
# the start and the trained policy over held-out MT-Bench questions, measured on the text itself (words,
# readability grade, degeneration) and by the RM. See recipes/real_chat/README.md and docs/real_chat.md.
#
#   recipes/real_chat/run.sh OUTDIR
#
# Environment (all optional):
#   HELPSTEER   a local JSONL/Parquet/CSV file or a hub id (default ../shared/data/helpsteer_sample.jsonl;
#               e.g. nvidia/HelpSteer2 with hub access)
#   MT_BENCH    the evaluation questions, MT-Bench's question.jsonl (default ../shared/data/mt_bench_questions.jsonl)
#   STEPS       RLOO steps (default: the config's)
#   LIMIT       evaluate on the first LIMIT questions only (default: all)
#   PRECISION   bf16-mixed (default; CPUs with AVX512-BF16 and GPUs) or 32-true
# A stage whose output exists is skipped, so an interrupted run continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=${1:?usage: recipes/real_chat/run.sh OUTDIR}
mkdir -p "$OUT"
started=$(date +%s)
# shellcheck source=recipes/real_chat/common.sh
. recipes/real_chat/common.sh  # HELPSTEER, MT_BENCH, PRECISION -> source_args, bf16, START

RM="$OUT/real_chat_rm/version_0/export"
POLICY="$OUT/real_chat_rloo/version_0/export"
common=(--trainer.logger.init_args.save_dir "$OUT" --trainer.logger.init_args.version 0
        --trainer.enable_progress_bar false)

echo "== 1/4 reward model (MiniLM, HelpSteer in 3 levels per head)"
if [[ ! -f "$RM/config.json" ]]; then
  moslim-pl fit --config configs/reward_model/real_chat-minilm.yaml "${source_args[@]}" "${common[@]}"
fi

echo "== 2/4 RLOO of $START (LoRA) on the reward model's training prompts"
if [[ ! -f "$POLICY/config.json" ]]; then
  moslim-pl fit --config configs/policy/real_chat-smollm2-cpu.yaml "${source_args[@]}" "${common[@]}" \
    --model.reward_model "$RM" --trainer.precision "$PRECISION" ${STEPS:+--trainer.max_steps "$STEPS"}
fi

for which in start trained; do
  echo "== $([[ $which == start ]] && echo 3 || echo 4)/4 sweep of the $which policy over $MT_BENCH"
  policy=$([[ $which == start ]] && echo "$START" || echo "$POLICY")
  if [[ ! -f "$OUT/eval/$which.json" ]]; then
    python recipes/real_chat/evaluate.py sweep --policy "$policy" --reward-model "$RM" \
      --questions "$MT_BENCH" --out "$OUT/eval/$which.json" "${bf16[@]}" ${LIMIT:+--limit "$LIMIT"}
  fi
done

minutes=$(python -c "print(round(($(date +%s) - $started) / 60, 1))")
python recipes/real_chat/evaluate.py report --start "$OUT/eval/start.json" --trained "$OUT/eval/trained.json" \
  --out "$OUT" --minutes "$minutes"
echo "real_chat.json, real_chat_*.png and examples.md are in $OUT ($minutes minutes)"
