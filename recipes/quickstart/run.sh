#!/usr/bin/env bash
# Quickstart pipeline on the embedded synthetic world, CPU only, no download:
#   SFT (no prefixes) -> multi-head reward model -> RLOO with prefixes -> controllability sweeps.
#   recipes/quickstart/run.sh OUTDIR
# Writes OUTDIR/controllability_sft.json (the SFT start) and OUTDIR/controllability.json (the RLOO
# policy), each {"<dimension>": {"spearman_oracle", "spearman_rm", "levels"}}, plus PNG plots, and
# prints both tables. Extra arguments go to the RLOO stage (e.g. --trainer.max_steps 100). SEED=n passes
# --seed_everything n to every stage (initial weights, dropout, sampling); the synthetic data and the
# prompt split keep their own seeds, so the sweeps use the same held-out prompts.
set -euo pipefail
out=${1:?usage: recipes/quickstart/run.sh OUTDIR [RLOO options]}
shift
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny models run fastest on one thread

latest() { ls -d "$out/$1"/version_* | sort -V | tail -n 1; }
common=(--trainer.logger.init_args.save_dir "$out" --trainer.enable_progress_bar false)
if [[ -n ${SEED:-} ]]; then common+=(--seed_everything "$SEED"); fi

# The SFT and reward-model stages are independent: run them side by side.
moslim-pl fit --config "$root/configs/sft/quickstart.yaml" "${common[@]}" > "$out/sft.log" 2>&1 &
sft_pid=$!
moslim-pl fit --config "$root/configs/reward_model/quickstart.yaml" "${common[@]}" > "$out/rm.log" 2>&1 \
  || { tail -n 20 "$out/rm.log"; exit 1; }
wait "$sft_pid" || { tail -n 20 "$out/sft.log"; exit 1; }
sft=$(latest sft_quickstart)/export
rm_export=$(latest reward_model_quickstart)/export
python -m moslim_pl.evaluation.tensorboard "$(latest reward_model_quickstart)" --prefix val/acc/

moslim-pl fit --config "$root/configs/policy/rloo_quickstart.yaml" "${common[@]}" \
  --model.policy "$sft" --model.reward_model "$rm_export" "$@" > "$out/rloo.log" 2>&1 \
  || { tail -n 20 "$out/rloo.log"; exit 1; }
rloo=$(latest rloo_quickstart)/export

# The controllability sweep is the policy modules' test loop: 16 held-out prompts, every level of every
# dimension, measured by the oracle and the RM; it writes <log_dir>/controllability.{json,png}.
sweep() {  # sweep POLICY NAME
  moslim-pl test --config "$root/configs/policy/rloo_quickstart.yaml" "${common[@]}" \
    --trainer.logger.init_args.name "sweep_$2" --model.policy "$1" --model.reward_model "$rm_export" \
    > "$out/sweep_$2.log" 2>&1 || { tail -n 20 "$out/sweep_$2.log"; exit 1; }
  cp "$(latest "sweep_$2")/controllability.json" "$out/$2.json"
  cp "$(latest "sweep_$2")/controllability.png" "$out/$2.png"
  python -m moslim_pl.evaluation.controllability "$out/$2.json"
}
echo "== controllability of the SFT start"
sweep "$sft" controllability_sft
echo "== controllability of the RLOO policy"
sweep "$rloo" controllability
