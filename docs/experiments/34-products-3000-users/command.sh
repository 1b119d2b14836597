#!/usr/bin/env bash
set -euo pipefail
# The exact command was not recorded in the repository. The pipeline on such tables is:
#   instructrec-batch pipeline --config my.yaml
exit 0
