#!/usr/bin/env bash
set -euo pipefail
# Scratch probes not in the repository; no command recorded.
exit 0
