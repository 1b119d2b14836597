#!/usr/bin/env bash
# ReDial as prepared by He et al. (GitHub AaronHeee/LLMs-as-Zero-Shot-Conversational-RecSys, commit 5a52caa,
# data/redial/: test.jsonl, item_ids.json, entity2id.json), copied to a local folder (never committed).
# Run 1 (commit 1ba1a1f, from a copy of the tree; nothing else running):
instructrec-batch redial --source /tmp/redial --config conf/redial.yaml --workdir /tmp/redial-run
# Run 2 (same commit, nothing else running): every validation dialogue a fusion list, the same test dialogues
instructrec-batch redial --source /tmp/redial --config conf/redial.yaml --workdir /tmp/redial-run2 \
  --set "redial.shares=[0.5,0.2,0.3]" --set train.fusion_users=1000
