"""Ranking: the one home of how candidates are ordered from their evidence and the model's score.

The ranker (`ranker`), the evidence blend's terms, its fit and how missing evidence is filled
(`blend`), the fusion head built on the blend (`fusion`), what a score adds over the evidence
(`added`) and the ranking metrics (`metrics`). The train, score and evaluate jobs all use these,
so a list is ordered the same way wherever it is ordered.
"""
