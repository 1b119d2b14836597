#!/usr/bin/env bash
# Measured on the code of commit 9a73116; today's code computes more evidence, so figures differ.
set -euo pipefail
# The sparse copy (each user's 12 newest MovieLens interactions) was cut by a scratch script not in the
# repository and written with deltalake into DIR/tables (interactions, items).
instructrec-batch pipeline --config conf/demo.yaml --workdir DIR --set prompt.sample_users=null
