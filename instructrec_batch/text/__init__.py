"""Text: free-text fields made safe for an instruction (`sanitize`) and item text as Spark columns (`items`)."""
