#!/usr/bin/env bash
set -euo pipefail
make demo
#   make demo runs: .venv/bin/instructrec-batch demo --config conf/demo.yaml --workdir work $(DEMO_FLAGS)
