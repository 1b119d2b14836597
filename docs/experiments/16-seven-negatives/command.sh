#!/usr/bin/env bash
# Measured on the code of commit aad3def; today's code computes more evidence, so figures differ.
set -euo pipefail
make demo DEMO_FLAGS='--full --set train.negatives=7'
#   make demo runs: .venv/bin/instructrec-batch demo --config conf/demo.yaml --workdir work $(DEMO_FLAGS)
