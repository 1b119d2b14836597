"""The stage jobs, side by side: data, evidence, prompts, train, score, promote, evaluate.

Each is one library function a CLI subcommand, a spark-submit entry point (jobs/*.py) and the
pipeline call. None imports another: what two stages share lives in a library package below them
(checked by import-linter in `make quality`).
"""
