#!/usr/bin/env bash
# Measured on the code of commit af00672; today's code computes more evidence, so figures differ.
set -euo pipefail
# `evaluate` re-run on the stored tables of runs 26 and 28; the record gives no flags. As run 26 ran it
# (W, R: each run's workdir and run_id):
instructrec-batch evaluate --config conf/demo.yaml --workdir W --run-id R --set prompt.sample_users=null
# End to end:
make demo DEMO_FLAGS=--full
make demo
# The diagnostics and the paired figures came from scratch scripts not in the repository (one reproduces both rows exactly).
