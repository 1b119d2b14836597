#!/usr/bin/env bash
# MovieLens-100K replayed as a production night on an item-kNN retriever's top-20 (nights.py says how), from
# a copy of the tree at commit 33a6467 (git archive) with the project's venv; 8 minutes of my unit tests shared
# the cores during its evidence stage, which slows, not changes, a run bounded by steps and epochs. The
# demo's settings but every user (no sample), and MovieLens's monthly pace: a list's label is what its user
# chose within 30 days (train.horizon_days, evaluate's horizon); the training cut-off leaves the newest 20%
# of the night's interactions after it.
set -euo pipefail
python docs/experiments/46-replayed-nights/nights.py --workdir /tmp/nights \
  --nights 1998-01-01 --horizon-days 30 \
  --config conf/demo.yaml --set prompt.sample_users=null \
  --set train.horizon_days=30 --set train.valid_share=0.2 --set train.fusion_users=200
