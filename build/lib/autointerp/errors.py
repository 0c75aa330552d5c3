"""The exceptions autointerp raises; each message says what the user should change."""


class AutointerpError(Exception):
    """Base class: the CLI prints the message on one line and exits non-zero."""


class ConfigError(AutointerpError):
    """A configuration file or override is wrong (unknown key, bad value)."""


class SubjectModelError(AutointerpError):
    """The subject model cannot be loaded or a hook point does not exist."""


class FeatureError(AutointerpError):
    """A feature index or layer is out of range for the subject model."""


class CorpusError(AutointerpError):
    """The corpus is missing, empty or unreadable."""


class LLMError(AutointerpError):
    """A language-model backend failed (unknown backend, bad answer, timeout)."""


class StoreError(AutointerpError):
    """The DuckDB store cannot be opened or holds unexpected data."""


class RunIncomplete(AutointerpError):
    """A run ended with live features left undone (`incomplete`) or with a stage that did nothing (`failed`)."""

    def __init__(self, run_id: str, status: str, message: str) -> None:
        super().__init__(f"run {run_id} is {status}: {message}")
        self.run_id = run_id
        self.status = status
