#!/usr/bin/env bash
# ReDial as prepared by He et al. (GitHub AaronHeee/LLMs-as-Zero-Shot-Conversational-RecSys, commit 5a52caa,
# data/redial/), copied to /tmp/redial (never committed). Every run from a copy of the tree (git archive), with
# nothing else running unless README.md says otherwise. All runs: dialogues split 50/20/30 (the same 399 test
# dialogues as record 44's runs), every validation dialogue a fusion list.
set -euo pipefail
COMMON=(--config conf/redial.yaml --set "redial.shares=[0.5,0.2,0.3]" --set train.fusion_users=1000)

# Run A, the fusion head lever (commit bc28ab6: the blend the head stacks on is cross-fitted), the whole
# pipeline with conf/redial.yaml's 60 steps of that commit:
instructrec-batch redial --source /tmp/redial --workdir /tmp/redial-runA "${COMMON[@]}"

# Runs B, C, D (commit c67f1d5, the tree with templates v4): data, evidence, prompts and training, each in its
# own workdir; the measure is the fusion head's own, on the 269 validation lists (what the model's score adds
# to the cross-fitted blend, cross-validated over users).
lever() {  # lever NAME COMMAND [ARGS...] [--set ...]
  local name=$1; shift
  instructrec-batch "$@" --workdir "/tmp/lever-$name" --set "run.run_id=lever-$name" "${COMMON[@]}" \
    --set train.max_steps=240 --set train.eval_every=60 "${EXTRA[@]}"
}
for name in B C D; do
  case $name in
    B) EXTRA=() ;;
    C) EXTRA=(--set "train.forms={preference: 0.1, intention: 0.45, both: 0.45}") ;;
    D) EXTRA=(--set prompt.template_version=v4) ;;
  esac
  lever $name data redial --source /tmp/redial
  lever $name evidence
  lever $name prompts
  lever $name train
done
# (Run D's training was rerun the next session, `lever D train` alone on its tables, to score its fusion lists
# to the end.)
# Run B's test verdict, from the same copy of the tree: its adapter scores its run's lists, then the evaluation.
EXTRA=()
lever B score --adapter /tmp/lever-B/adapters/lever-B
lever B evaluate --adapter /tmp/lever-B/adapters/lever-B
