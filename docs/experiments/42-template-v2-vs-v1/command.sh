#!/usr/bin/env bash
# The record gives `bench scoring --users 12 --candidates 20` and `make demo`, one per template; the --set lines are
# how the template was switched, reconstructed.
# Measured on the code of commit 02a8d78; today's code computes more evidence, so figures differ.
set -euo pipefail
instructrec-batch bench scoring --base smollm2-135m-instruct --users 12 --candidates 20 --set prompt.template_version=v1
instructrec-batch bench scoring --base smollm2-135m-instruct --users 12 --candidates 20
make demo DEMO_FLAGS='--set prompt.template_version=v1'
make demo
