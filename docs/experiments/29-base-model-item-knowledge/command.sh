#!/usr/bin/env bash
set -euo pipefail
# Scratch probe not in the repository; no command recorded.
exit 0
