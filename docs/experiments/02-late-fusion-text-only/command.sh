#!/usr/bin/env bash
set -euo pipefail
# Scratch analysis not in the repository; the adapter came from a demo run cut to 9 steps. No command recorded.
exit 0
