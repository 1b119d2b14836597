#!/usr/bin/env bash
set -euo pipefail
# Scratch script not in the repository; no command recorded.
exit 0
