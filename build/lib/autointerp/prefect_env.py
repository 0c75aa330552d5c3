"""Quiet, offline Prefect defaults, set before Prefect is imported (its settings read the environment)."""

from __future__ import annotations

import logging
import os

from autointerp.errors import AutointerpError
from autointerp.subject.model import cache_dir

_RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")


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


def _user_error_names(kind: type[BaseException] = AutointerpError) -> set[str]:
    return {kind.__name__}.union(*(_user_error_names(sub) for sub in kind.__subclasses__()))


class _HideUserErrors(logging.Filter):
    """Drops Prefect's run-log records about an AutointerpError (bad input, a failed LLM): the CLI
    prints those as one line, and a traceback would bury it. Other errors keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], AutointerpError):
            return False
        text = record.getMessage()
        return not any(f"{name}(" in text or f"{name}:" in text for name in _user_error_names())


def hide_user_error_tracebacks() -> None:
    """Installs the filter on Prefect's task- and flow-run loggers (once)."""
    for name in _RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _HideUserErrors) for f in logger.filters):
            logger.addFilter(_HideUserErrors())
