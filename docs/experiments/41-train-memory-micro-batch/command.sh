#!/usr/bin/env bash
# Measured on the code of commit 9bee918; today's code computes more evidence, so figures differ.
set -euo pipefail
# Standalone train with conf/demo.yaml, memory sampled by hand every 0.5 s (the sampler is not in the repository):
instructrec-batch train --config conf/demo.yaml --workdir work --set train.micro_batch_tokens=512
