#!/usr/bin/env bash
# The demo at the refactored tree (commit 36151be), from a copy of the tree so edits elsewhere could not reach it:
instructrec-batch demo --config conf/demo.yaml --workdir /tmp/demo37
# The pre-refactor code (commit 2bd1e63) on the same machine and the same input tables:
#   evidence (its own run id) and compared with the demo's candidate_evidence, column by column:
instructrec-batch evidence --config conf/demo.yaml --workdir /tmp/oldev --run-id old --set mlflow.enabled=false
#   evaluation of the non-model methods on a copy of the demo's tables, for the demo's run id:
instructrec-batch evaluate --config conf/demo.yaml --workdir /tmp/oldev2 --run-id 2026-12-07-5d386eeb \
  --set mlflow.enabled=false --set "evaluate.methods=[random,popularity,itemknn,blend,sasrec]"
