#!/usr/bin/env bash
set -euo pipefail
# Scratch analysis not in the repository; no command recorded.
exit 0
