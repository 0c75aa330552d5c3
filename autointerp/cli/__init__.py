"""The `autointerp` command (`app`) and the checks a run makes before it starts (`preflight`)."""
