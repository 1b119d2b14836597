#!/usr/bin/env bash
# Measured on the code of commit e7d27fa; today's code computes more evidence, so figures differ.
set -euo pipefail
make demo DEMO_FLAGS='--full --set train.eval_every=60'
#   make demo runs: .venv/bin/instructrec-batch demo --config conf/demo.yaml --workdir work $(DEMO_FLAGS)
