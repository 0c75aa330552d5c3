"""What every stage of the loop shares: the feature pool the LLM stages run on (`pool`), the run's
features and subject model (`common`), whether a stored run may be resumed (`resume`), and the quiet,
offline Prefect environment (`prefect_env`).

The stages themselves live beside the code they drive: `collect.stage`, `explain.stage`,
`score.stage`, `experiments.stage`.
"""
