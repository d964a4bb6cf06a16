#!/usr/bin/env bash
# Can RLOO in the CPU budget teach SmolLM2 to follow <verbosity n> at all, given an exact length reward?
# The recipe's policy stage, verbosity alone, against recipes/real_chat/length_rm.py (a hand-built RM that
# reads only the answer's token count; levels cut at 40 and 100 tokens) with the expected_level mapping;
# then the verbosity sweep of the trained and the start policy over the MT-Bench questions and the report.
#   recipes/real_chat/length_diagnostic.sh OUTDIR        (about 62 minutes on 2 CPU cores; docs/real_chat.md)
# Environment: HELPSTEER, MT_BENCH, STEPS, PRECISION as in recipes/real_chat/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?usage: recipes/real_chat/length_diagnostic.sh OUTDIR}
mkdir -p "$OUT"
started=$(date +%s)
# shellcheck source=recipes/real_chat/common.sh
. recipes/real_chat/common.sh  # HELPSTEER, MT_BENCH, PRECISION -> source_args, bf16, START
[[ -f "$OUT/length_rm/config.json" ]] || python recipes/real_chat/length_rm.py "$OUT/length_rm"
POLICY="$OUT/real_chat_rloo/version_0/export"
if [[ ! -f "$POLICY/config.json" ]]; then
  moslim-pl fit --config configs/policy/real_chat-smollm2-cpu.yaml \
    "${source_args[@]}" --model.reward_model "$OUT/length_rm" \
    --data.dimensions '[{"name": "verbosity", "low": 0, "high": 4, "bins": 3, "default": 1}]' \
    --data.max_dimensions 1 --data.size_weights '[1.0]' --data.no_prefix_prob 0 \
    --model.reward.mapping expected_level --model.reward.missing_eos_penalty null \
    --trainer.precision "$PRECISION" ${STEPS:+--trainer.max_steps "$STEPS"} \
    --trainer.logger.init_args.save_dir "$OUT" --trainer.logger.init_args.version 0 \
    --trainer.enable_progress_bar false
fi
for which in start trained; do
  policy=$([[ $which == start ]] && echo "$START" || echo "$POLICY")
  [[ -f "$OUT/eval/$which.json" ]] || python recipes/real_chat/evaluate.py sweep --policy "$policy" \
    --reward-model "$OUT/length_rm" --dimensions verbosity --questions "$MT_BENCH" --out "$OUT/eval/$which.json" "${bf16[@]}"
done
minutes=$(python -c "print(round(($(date +%s) - $started) / 60, 1))")
python recipes/real_chat/evaluate.py report --start "$OUT/eval/start.json" --trained "$OUT/eval/trained.json" \
  --out "$OUT" --minutes "$minutes"
