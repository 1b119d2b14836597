"""instructrec_batch: nightly LLM re-ranking as instruction following (InstructRec) on Spark."""

__version__ = "0.1.0"
