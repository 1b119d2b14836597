"""Evaluation: ranking metrics, baselines, the evaluate job and its report."""
