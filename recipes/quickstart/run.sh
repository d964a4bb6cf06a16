#!/usr/bin/env bash
# Quickstart pipeline on the embedded synthetic world, CPU only, no download.
#   recipes/quickstart/run.sh OUTDIR
# Today: trains the multi-head reward model and prints its per-head validation accuracy.
# (The SFT -> RLOO -> controllability stages join this pipeline with the policy stage.)
set -euo pipefail
out=${1:?usage: recipes/quickstart/run.sh OUTDIR}
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"

moslim-pl fit --config "$root/configs/reward_model/quickstart.yaml" \
  --trainer.logger.init_args.save_dir "$out" --trainer.enable_progress_bar false

run=$(ls -d "$out"/reward_model_quickstart/version_* | sort -V | tail -n 1)
python -m moslim_pl.evaluation.tensorboard "$run" --prefix val/acc/
echo "reward model exported to $run/export"
