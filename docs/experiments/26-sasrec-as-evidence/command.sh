#!/usr/bin/env bash
# Measured on the code of commit a52b51b; today's code computes more evidence, so figures differ.
set -euo pipefail
make demo DEMO_FLAGS='--full --set evaluate.sasrec.epochs=80 --set evaluate.sasrec.lr=0.003 --set evaluate.sasrec.loss=ce --set evaluate.sasrec.sequences=all'
#   make demo runs: .venv/bin/instructrec-batch demo --config conf/demo.yaml --workdir work $(DEMO_FLAGS)
# Today these --set keys are the sasrec section's defaults (sasrec.epochs, sasrec.lr, ...).
# The sasrec row from the run's own evidence (W, R: that run's workdir and run_id):
instructrec-batch evaluate --config conf/demo.yaml --workdir W --run-id R --set prompt.sample_users=null \
  --set 'evaluate.methods=[random,popularity,itemknn,blend,sasrec]'
# The recipe comparison was a set of scratch runs not in the repository.
