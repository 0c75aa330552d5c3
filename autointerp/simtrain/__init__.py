"""Training a local simulator: synthetic feature families, LoRA fine-tuning, evaluation on held-out ones."""
