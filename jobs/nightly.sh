#!/usr/bin/env bash
# One night of the pipeline with spark-submit: evidence -> prompts -> score -> evaluate, for cron or an Airflow
# BashOperator. Every job derives the same run_id from RUN_DATE and the config, so rerunning a night
# replaces its rows instead of adding a second copy. The evaluate step judges an earlier night by what
# users did after it (evaluate.night=previous: the latest night whose evaluate.horizon_days have passed),
# not a benchmark split, which a production schema does not have.
#
#   jobs/nightly.sh 2026-11-22 conf/prod.yaml /Volumes/main/instructrec/models/adapter
#
# Environment: SPARK_SUBMIT (default spark-submit), SUBMIT_ARGS (e.g. "--master yarn
# --properties-file conf/spark-gpu.conf --py-files dist/instructrec_batch-0.1.0-py3-none-any.whl").
set -euo pipefail
RUN_DATE=${1:?usage: nightly.sh RUN_DATE CONFIG ADAPTER}
CONFIG=${2:?usage: nightly.sh RUN_DATE CONFIG ADAPTER}
ADAPTER=${3:?usage: nightly.sh RUN_DATE CONFIG ADAPTER}
HERE="$(cd "$(dirname "$0")" && pwd)"
SUBMIT=(${SPARK_SUBMIT:-spark-submit} ${SUBMIT_ARGS:-})
COMMON=(--engine spark --config "$CONFIG" --run-date "$RUN_DATE")

"${SUBMIT[@]}" "$HERE/build_evidence.py" "${COMMON[@]}"
"${SUBMIT[@]}" "$HERE/build_prompts.py" "${COMMON[@]}"
"${SUBMIT[@]}" "$HERE/score.py" "${COMMON[@]}" --adapter "$ADAPTER"
"${SUBMIT[@]}" "$HERE/evaluate.py" "${COMMON[@]}" --set evaluate.night=previous
