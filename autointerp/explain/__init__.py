"""Orient: the explainer prompt and its parsing (`explainer`), contrastive explaining (`contrastive`),
best-of-k by simulation (`best_of`) and the stage function (`stage.run_explain`)."""
