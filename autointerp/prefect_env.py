"""Quiet, offline Prefect defaults, set before Prefect is imported (its settings read the environment)."""

from __future__ import annotations

import os

from autointerp.subject.model import cache_dir


def configure_prefect_defaults() -> None:
    """Sets Prefect's home, telemetry, log level and server start-up timeout unless the user set them."""
    defaults = {
        "PREFECT_HOME": str(cache_dir() / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
