#!/usr/bin/env bash
# Measured on the code of commit ec37b18; today's code computes more evidence, so figures differ.
set -euo pipefail
# The sparse copy's tables as in run 23 (scratch script not in the repository).
instructrec-batch pipeline --config conf/demo.yaml --workdir W --set prompt.sample_users=null
# The epoch comparison was a set of scratch runs not in the repository.
