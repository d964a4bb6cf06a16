# Sourced by recipes/real_chat/run.sh and length_diagnostic.sh (from the repository root, after `set -euo
# pipefail`): the environment's defaults and the arguments both scripts derive from them.
#   HELPSTEER  a local JSONL/Parquet/CSV file or a hub id -> source_args (the --data.source options)
#   MT_BENCH   the evaluation questions (must exist)
#   PRECISION  the trainer's precision -> bf16 (the sweeps' --bf16 flag when it is a bf16 one)
HELPSTEER=${HELPSTEER:-../shared/data/helpsteer_sample.jsonl}
MT_BENCH=${MT_BENCH:-../shared/data/mt_bench_questions.jsonl}
PRECISION=${PRECISION:-bf16-mixed}
START=HuggingFaceTB/SmolLM2-135M-Instruct
if [[ -f "$HELPSTEER" ]]; then
  case "$HELPSTEER" in
    *.parquet) format=parquet ;;
    *.csv) format=csv ;;
    *) format=json ;;
  esac
  source_args=(--data.source.path "$format" --data.source.data_files "$HELPSTEER")
else
  source_args=(--data.source.path "$HELPSTEER")
fi
[[ -f "$MT_BENCH" ]] || { echo "$(basename "$0"): no evaluation questions at $MT_BENCH (set MT_BENCH)" >&2; exit 2; }
bf16=()
if [[ "$PRECISION" == bf16* ]]; then bf16=(--bf16); fi  # an if, so sourcing never ends on a false test
