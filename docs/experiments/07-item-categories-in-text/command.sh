#!/usr/bin/env bash
# Measured on the code of commit 273958e; today's code computes more evidence, so figures differ.
set -euo pipefail
make demo DEMO_FLAGS=--full   # same command as run 04; categories shown by default from this run on
#   make demo runs: .venv/bin/instructrec-batch demo --config conf/demo.yaml --workdir work $(DEMO_FLAGS)
