#!/usr/bin/env bash
# Measured on the code of commit cbf3395; today's code computes more evidence, so figures differ.
set -euo pipefail
make demo DEMO_FLAGS='--full --set prompt.max_history=20 --set train.max_history=20 --set train.max_length=768 --set prompt.max_tokens=768'
#   make demo runs: .venv/bin/instructrec-batch demo --config conf/demo.yaml --workdir work $(DEMO_FLAGS)
# Today train.max_history is gone (prompt.max_history sets both): drop that --set to rerun.
