"""Batch scoring: scorers (torch), the executor-side UDF, and the score job (Spark)."""
