#!/usr/bin/env bash
# MovieLens-100K with InstructRec's specific intention (each interaction's request names the film's genres),
# the demo's pipeline and sample (300 users), from a copy of the tree at commit 0ad6799 (git archive), nothing
# else running but short unit-test runs of mine during its evidence and training stages (which slows, not
# changes, a run bounded by steps).
set -euo pipefail
instructrec-batch demo --config conf/demo.yaml --config conf/movielens-genre-intents.yaml --workdir /tmp/ml-genre
