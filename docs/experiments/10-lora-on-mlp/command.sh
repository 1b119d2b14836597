#!/usr/bin/env bash
# Measured on the code of commit d41f211; today's code computes more evidence, so figures differ.
set -euo pipefail
make demo DEMO_FLAGS="--full --set 'train.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]'"
# and the demo (300 users) with the same --set:
make demo DEMO_FLAGS="--set 'train.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]'"
#   make demo runs: .venv/bin/instructrec-batch demo --config conf/demo.yaml --workdir work $(DEMO_FLAGS)
