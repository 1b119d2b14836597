"""Input data: the MovieLens-100K demo source and the evaluation protocol (held-out split, candidates)."""
