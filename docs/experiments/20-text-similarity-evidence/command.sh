#!/usr/bin/env bash
# The offline analysis was a scratch script not in the repository.
# Measured on the code of commit e864d19; today's code computes more evidence, so figures differ.
set -euo pipefail
make demo DEMO_FLAGS=--full
#   make demo runs: .venv/bin/instructrec-batch demo --config conf/demo.yaml --workdir work $(DEMO_FLAGS)
