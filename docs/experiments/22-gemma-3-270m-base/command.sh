#!/usr/bin/env bash
# Measured on the code of commit 1741a96; today's code computes more evidence, so figures differ.
set -euo pipefail
make demo DEMO_FLAGS='--full --set model.base=<folder>'
#   make demo runs: .venv/bin/instructrec-batch demo --config conf/demo.yaml --workdir work $(DEMO_FLAGS)
# the scorer check:
# instructrec-batch bench scoring --base <folder> --users 8
