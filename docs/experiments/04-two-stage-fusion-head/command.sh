#!/usr/bin/env bash
# Measured on the code of commit 3ad6804; today's code computes more evidence, so figures differ.
set -euo pipefail
make demo DEMO_FLAGS=--full   # 'without zero-shot': evaluate.methods as in overlay.yaml
#   make demo runs: .venv/bin/instructrec-batch demo --config conf/demo.yaml --workdir work $(DEMO_FLAGS)
