"""Base models (pull, resolve, load) and LoRA adapters."""
