#!/usr/bin/env bash
# Record 49's nights and trainings (one on 1998-01-01's tables, then `train` on the tables of every fourth night),
# with the blend also fitted on the lists at eight earlier cut-offs one week apart before each training's log end
# (train.blend_windows=8: each user's kept list in force when they came back, else an item-kNN replay).
# From a copy of the tree at commit ab9be9f (git archive) with the project's venv; nothing else running.
set -euo pipefail
python docs/experiments/46-replayed-nights/nights.py --workdir /tmp/nights50 \
  --train-date 1998-01-01 --retrain-every 4 \
  --nights 1998-01-08 1998-01-15 1998-01-22 1998-01-29 1998-02-05 1998-02-12 1998-02-19 1998-02-26 \
           1998-03-05 1998-03-12 1998-03-19 1998-03-26 1998-04-02 1998-04-09 1998-04-16 \
  --horizon-days 7 \
  --config conf/demo.yaml --set prompt.sample_users=null --set evidence.sequential=false \
  --set train.horizon_days=7 --set train.valid_share=0.2 --set train.fusion_users=200 --set train.blend_windows=8
