#!/usr/bin/env bash
set -euo pipefail
instructrec-batch bench evidence --users 10000 --items 5000 --interactions-per-user 50 --sequential --set evidence.sequential.epochs=2
instructrec-batch bench evidence --users 10000 --items 5000 --interactions-per-user 50
# Today the key is sasrec.epochs: --set sasrec.epochs=2
