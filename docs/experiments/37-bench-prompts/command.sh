#!/usr/bin/env bash
set -euo pipefail
instructrec-batch bench prompts --users 100000 --items 50000 --interactions-per-user 50
