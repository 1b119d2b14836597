"""Collaborative evidence per (user, candidate): what interaction data alone says about a candidate."""
