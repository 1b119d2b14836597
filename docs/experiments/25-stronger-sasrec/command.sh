#!/usr/bin/env bash
# Measured on the code of commit 4f49524; today's code computes more evidence, so figures differ.
set -euo pipefail
# As the record gives it: evaluate --config conf/demo.yaml --set evaluate.sasrec.epochs=200 plus the two settings and all users.
# W and R: the workdir and run_id of run 24's tables.
instructrec-batch evaluate --config conf/demo.yaml --workdir W --run-id R --set evaluate.sasrec.epochs=200 \
  --set evaluate.sasrec.loss=ce --set evaluate.sasrec.sequences=all --set prompt.sample_users=null
# Today evaluate.sasrec.* is the sasrec section: --set sasrec.epochs=200 (and evaluate.sasrec_source=train).
# The recipe comparison (SASRec alone, 200 epochs each) was a scratch script not in the repository.
