#!/usr/bin/env bash
set -euo pipefail
instructrec-batch bench evidence --users 100000 --items 50000 --interactions-per-user 50
instructrec-batch bench evidence --users 200000 --items 50000 --interactions-per-user 50
# product-like titles: an ad-hoc variant of the bench, not in the repository
