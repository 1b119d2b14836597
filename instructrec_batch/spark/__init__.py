"""Spark I/O shared by every job: sessions (engine), tables, the runs ledger, rejects, input errors, fault injection."""
