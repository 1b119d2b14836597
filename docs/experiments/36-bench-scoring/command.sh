#!/usr/bin/env bash
set -euo pipefail
instructrec-batch bench scoring --base smollm2-135m-instruct --users 32 --candidates 20
