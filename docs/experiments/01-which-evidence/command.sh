#!/usr/bin/env bash
set -euo pipefail
# A pandas analysis script that is not in the repository; no command was recorded.
exit 0
