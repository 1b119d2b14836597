#!/usr/bin/env bash
set -euo pipefail
instructrec-batch bench train --base smollm2-135m-instruct --steps 20 --set train.val_users=30
