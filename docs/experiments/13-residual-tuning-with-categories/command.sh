#!/usr/bin/env bash
# Measured on the code of commit 0cdd259; today's code computes more evidence, so figures differ.
set -euo pipefail
make demo DEMO_FLAGS='--full --set train.residual=true'
#   make demo runs: .venv/bin/instructrec-batch demo --config conf/demo.yaml --workdir work $(DEMO_FLAGS)
