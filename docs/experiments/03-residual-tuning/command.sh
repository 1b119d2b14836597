#!/usr/bin/env bash
# Measured on the code of commit 3ad6804; today's code computes more evidence, so figures differ.
set -euo pipefail
# The record names the settings, not the command; the demo with them:
make demo DEMO_FLAGS='--set train.residual=true --set train.max_steps=120 --set train.fusion_users=120'
