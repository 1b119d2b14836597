"""LoRA instruction tuning: examples built in Spark, sequences and the training loop on the driver."""
