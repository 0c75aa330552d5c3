"""Whether a stored run may be resumed by a config: its stored data must have been made under the same
settings, and a change to the later stages' settings is said out loud."""

from __future__ import annotations

from autointerp.config import RunConfig, changed_settings
from autointerp.errors import ConfigError
from autointerp.store.database import Store

COLLECTED_SECTIONS = ("subject", "features", "corpus", "collect")
"""Settings of what collection stores (features, their statistics and exemplars): a resume would reuse that
data as if made under the new settings. Neighbours and output evidence, stored once too, warn instead: a
resume that turns them off or lowers their memory must not be refused."""

UNCOLLECTED_KEYS = ("collect.checkpoint_every", "corpus.batch_size", "subject.device")
"""Collection settings that change how it runs, not what it keeps: free to change on a resume (a run collected
on a GPU may go on where there is none)."""

SHOWN_CHANGES = 3
"""Changed settings named in a message; the rest are counted."""


def check_resumable(store: Store, config: RunConfig) -> str | None:
    """Returns a warning when the config's run is stored under other settings that its stored data does not
    depend on (the LLM stages': work already done keeps the old ones; any, before anything was collected),
    else None. Raises ConfigError, in one line, when the stored run's collection was made under other
    settings (an explicit `run_id` reused with another layer, corpus or subject model)."""
    if not store.path.exists():
        return None
    run_id = config.resolved_run_id()
    changes = changed_settings(store.stored_config(run_id) or {}, config)
    changes = [c for c in changes or [] if c.split(":", 1)[0] not in UNCOLLECTED_KEYS]
    if not changes:
        return None
    collected = [c for c in changes if c.split(".", 1)[0] in COLLECTED_SECTIONS]
    if collected and store.has_features(run_id):
        raise ConfigError(
            f"run {run_id} was collected under other settings ({_shown(collected)}): set them back to resume it, "
            "or give this config another run_id"
        )
    return f"resuming run {run_id} under changed settings ({_shown(changes)}); the work it has done keeps the old ones"


def _shown(changes: list[str]) -> str:
    shown = "; ".join(changes[:SHOWN_CHANGES])
    return shown + (f"; and {len(changes) - SHOWN_CHANGES} more" if len(changes) > SHOWN_CHANGES else "")
