#!/usr/bin/env bash
# Measured on the code of commit 9b8eab2; today's code computes more evidence, so figures differ.
set -euo pipefail
make demo DEMO_FLAGS='--full --set train.max_steps=150 --set train.eval_every=30'
#   make demo runs: .venv/bin/instructrec-batch demo --config conf/demo.yaml --workdir work $(DEMO_FLAGS)
