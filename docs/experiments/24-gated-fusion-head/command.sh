#!/usr/bin/env bash
# Measured on the code of commit 80632b5; today's code computes more evidence, so figures differ.
set -euo pipefail
make demo DEMO_FLAGS=--full
#   make demo runs: .venv/bin/instructrec-batch demo --config conf/demo.yaml --workdir work $(DEMO_FLAGS)
