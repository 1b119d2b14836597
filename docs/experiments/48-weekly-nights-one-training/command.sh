#!/usr/bin/env bash
# MovieLens-100K replayed as fifteen weekly production nights (1998-01-08 to 1998-04-16) on an item-kNN
# retriever's top-20, after one training on the tables of 1998-01-01 (nights.py --train-date: the nightly jobs
# alone each night, with that adapter), from a copy of the tree at commit 2112fcd (git archive) with the
# project's venv. Each night is judged by what its users chose from their list in the 7 days after it. Every
# user (no sample); no sequential model (its training per night would dominate the run); the blend learns from
# the replays at the training cut-off and 8 weekly ones before it. My unit tests (and the transformers 4.x
# test runs) shared the cores during its training, which slows, not changes, a run bounded by steps.
set -euo pipefail
python docs/experiments/46-replayed-nights/nights.py --workdir /tmp/nights48 \
  --train-date 1998-01-01 \
  --nights 1998-01-08 1998-01-15 1998-01-22 1998-01-29 1998-02-05 1998-02-12 1998-02-19 1998-02-26 \
           1998-03-05 1998-03-12 1998-03-19 1998-03-26 1998-04-02 1998-04-09 1998-04-16 \
  --horizon-days 7 \
  --config conf/demo.yaml --set prompt.sample_users=null --set evidence.sequential=false \
  --set train.horizon_days=7 --set train.valid_share=0.2 --set train.fusion_users=200 --set train.replay_cutoffs=8

# The two checks outside the pipeline (README.md, Reading), run on idle cores after it: headroom.py (numpy
# alone) and refit.py (the library's replay, evidence and blend at commit 2112fcd; the figures were printed by
# the same code before it was tidied into this file).
python docs/experiments/48-weekly-nights-one-training/headroom.py /tmp/nights48/full/tables/interactions 7D 7 14 1997-12-03
python docs/experiments/48-weekly-nights-one-training/refit.py /tmp/nights48/full/tables/interactions \
  /tmp/nights48/full/tables/items 4
