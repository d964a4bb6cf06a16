#!/usr/bin/env bash
# The paper's comparison on the embedded synthetic world, CPU only, no download:
#   recipes/paper_comparison/run.sh OUTDIR
# Trains, from one SFT start and one multi-head reward model:
#   moslim          one RLOO policy steered by prefixes (Gaussian mapping), 1200 steps;
#   moslim_joint    the same with --model.reward.aggregation softmin (a smooth minimum of the named dimensions'
#                   terms: a hit cannot buy off a miss; docs/concepts.md), 1200 steps;
#   morlhf          three RLOO policies on fixed weight vectors of the linear mapping, 600 steps each;
#   rewarded_soups  one RLOO policy per dimension (that dimension's linear reward), 600 steps each,
#                   interpolated with the SFT start per request;
#   ric             SFT on rows whose prompt carries a prefix of the row's own labels (no RL);
# then answers the same held-out prompts for the same grid of requests with every method
# (moslim_pl/baselines/comparison.py) and writes OUTDIR/comparison.json and the table. It also trains
# three reward models with labels coarsened to 2, 3 and all levels (OUTDIR/granularity.json).
# Two lanes run side by side (one per core): about 21 minutes per seed on an otherwise idle 2-core machine
# (docs/paper_comparison.md).
#
# Seeds: SEED=n passes --seed_everything n to every stage (initial weights, dropout, RL sampling); the
# synthetic world, the prompt split and the prompt order keep their own seeds, so every seed answers the
# same held-out prompts. SEEDS="0 1 2" runs the whole recipe once per seed into OUTDIR/seed_<n>/ and
# writes the mean, std, min and max of every figure over the seeds to OUTDIR/comparison.json and
# OUTDIR/granularity.json (moslim_pl/baselines/seeds.py). Without either: the configs' seed, 0.
set -euo pipefail
out=${1:?usage: [SEEDS="0 1 2"] recipes/paper_comparison/run.sh OUTDIR}
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [[ -n ${SEEDS:-} ]]; then
  files=() grans=()
  for seed in $SEEDS; do
    echo "==== seed $seed"
    SEEDS="" SEED=$seed "$root/recipes/paper_comparison/run.sh" "$out/seed_$seed"
    files+=("$out/seed_$seed/comparison.json") grans+=("$out/seed_$seed/granularity.json")
  done
  python -m moslim_pl.baselines.seeds "${grans[@]}" --out "$out/granularity.json" > /dev/null
  python -m moslim_pl.baselines.seeds "${files[@]}" --out "$out/comparison.json"
  exit 0
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
latest() { ls -d "$out/$1"/version_* | sort -V | tail -n 1; }
common=(--trainer.logger.init_args.save_dir "$out" --trainer.enable_progress_bar false)
if [[ -n ${SEED:-} ]]; then common+=(--seed_everything "$SEED"); fi
fail() { tail -n 20 "$out/$1.log"; exit 1; }
fit() {  # fit NAME CONFIG [options]: one run, logged to OUTDIR/NAME.log
  local name=$1 config=$2
  shift 2
  moslim-pl fit --config "$root/configs/$config" "${common[@]}" --trainer.logger.init_args.name "$name" "$@" \
    > "$out/$name.log" 2>&1 || fail "$name"
}

echo "== SFT start and reward model"
fit sft_quickstart sft/quickstart.yaml &
sft_pid=$!
fit reward_model_quickstart reward_model/quickstart.yaml
wait "$sft_pid"
sft=$(latest sft_quickstart)/export
rm_export=$(latest reward_model_quickstart)/export
rl=(--model.policy "$sft" --model.reward_model "$rm_export")
baseline=(--trainer.max_steps 600 --trainer.val_check_interval 300 --data.no_prefix_prob 1.0 --model.reward.mapping linear)

echo "== MOSLIM, RiC and the baselines (two lanes)"
(
  fit moslim policy/rloo_quickstart.yaml "${rl[@]}"
  fit moslim_joint policy/rloo_quickstart.yaml "${rl[@]}" --model.reward.aggregation softmin
  fit morlhf_0 policy/rloo_quickstart.yaml "${rl[@]}" "${baseline[@]}" --model.reward.mapping_weights "[1, 1, 1]"
) &
lane_a=$!
(
  fit ric sft/quickstart.yaml --data.label_prefix true
  fit morlhf_1 policy/rloo_quickstart.yaml "${rl[@]}" "${baseline[@]}" --model.reward.mapping_weights "[-1, -1, 1]"
  fit morlhf_2 policy/rloo_quickstart.yaml "${rl[@]}" "${baseline[@]}" --model.reward.mapping_weights "[1, -1, -1]"
  fit soup_verbosity policy/rloo_quickstart.yaml "${rl[@]}" "${baseline[@]}" --model.reward.mapping_weights "[1, 0, 0]"
  fit soup_formality policy/rloo_quickstart.yaml "${rl[@]}" "${baseline[@]}" --model.reward.mapping_weights "[0, 1, 0]"
  fit soup_helpfulness policy/rloo_quickstart.yaml "${rl[@]}" "${baseline[@]}" --model.reward.mapping_weights "[0, 0, 1]"
) &
lane_b=$!
wait "$lane_a" || exit 1
wait "$lane_b" || exit 1

echo "== label granularity: reward models with 2, 3 and all levels"
dims() {  # dims BINS_VERBOSITY BINS_FORMALITY BINS_HELPFULNESS ("null": all levels); defaults stay valid
  echo "[{name: verbosity, high: 3, bins: $1, default: 1}, {name: formality, high: 2, bins: $2, default: 1},"\
    "{name: helpfulness, high: 3, bins: $3, default: 1}]"
}
fit rm_levels_2 reward_model/quickstart.yaml --data.dimensions "$(dims 2 2 2)" &
fit rm_levels_3 reward_model/quickstart.yaml --data.dimensions "$(dims 3 null 3)"
wait
python - "$out" <<'PY'
import json, sys
from pathlib import Path
from moslim_pl.evaluation.tensorboard import read_scalars
out = Path(sys.argv[1])
table = {}
for name, run in (("2", "rm_levels_2"), ("3", "rm_levels_3"), ("all", "reward_model_quickstart")):
    folder = sorted((out / run).glob("version_*"))[-1]
    scalars = read_scalars(folder)
    table[name] = {k.split("/")[-1]: v[-1] for k, v in scalars.items() if k.startswith("val/acc/")}
(out / "granularity.json").write_text(json.dumps(table, indent=2) + "\n")
print("val accuracy per head by number of levels:", json.dumps(table, indent=1))
PY

echo "== evaluation"
compute() { echo "\"$(latest "$1")/compute.json\""; }
cat > "$out/comparison_spec.json" <<JSON
{
  "reward_model": "$rm_export", "num_prompts": 16, "max_new_tokens": 64,
  "data": {"synthetic": {"num_prompts": 300, "seed": 0}, "seed": 0, "val_fraction": 0.2,
           "max_prompt_length": 32, "chat_template": false},
  "methods": {
    "moslim": {"kind": "prefix", "policy": "$(latest moslim)/export",
               "compute": [$(compute sft_quickstart), $(compute reward_model_quickstart), $(compute moslim)]},
    "moslim_joint": {"kind": "prefix", "policy": "$(latest moslim_joint)/export",
               "compute": [$(compute sft_quickstart), $(compute reward_model_quickstart),
                           $(compute moslim_joint)]},
    "morlhf": {"kind": "weights",
               "policies": ["$(latest morlhf_0)/export", "$(latest morlhf_1)/export", "$(latest morlhf_2)/export"],
               "weights": [[1, 1, 1], [-1, -1, 1], [1, -1, -1]],
               "compute": [$(compute sft_quickstart), $(compute reward_model_quickstart),
                           $(compute morlhf_0), $(compute morlhf_1), $(compute morlhf_2)]},
    "rewarded_soups": {"kind": "soup", "base": "$sft",
               "experts": {"verbosity": "$(latest soup_verbosity)/export",
                           "formality": "$(latest soup_formality)/export",
                           "helpfulness": "$(latest soup_helpfulness)/export"},
               "compute": [$(compute sft_quickstart), $(compute reward_model_quickstart),
                           $(compute soup_verbosity), $(compute soup_formality), $(compute soup_helpfulness)]},
    "ric": {"kind": "prefix", "policy": "$(latest ric)/export", "compute": [$(compute ric)]}
  }
}
JSON
python -m moslim_pl.baselines.comparison "$out/comparison_spec.json" --out "$out/comparison.json"
