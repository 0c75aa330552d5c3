"""Training the local explainer (`autointerp train-explainer`): LoRA on the explain stage's own prompt."""
