"""Scheduled labeling: a Prefect deployment that runs `label_features` on a cron or interval schedule.

Each scheduled run gets a fresh, timestamped run id and is incremental: it explains only the
features that are new or whose latest explanation came from a different explainer model or
prompt template (`schedule.incremental`), so a nightly run costs little when nothing changed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from autointerp.pipeline.prefect_env import configure_prefect_defaults

configure_prefect_defaults()

from prefect import flow  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from autointerp.config import RunConfig, _format_validation_error  # noqa: E402
from autointerp.errors import ConfigError  # noqa: E402
from autointerp.flows.label_features import label_features  # noqa: E402

DEFAULT_DEPLOYMENT = "nightly"


def scheduled_config(config_data: dict[str, Any], at: datetime | None = None) -> dict[str, Any]:
    """Returns the config of one scheduled run: incremental, with a run id stamped with `at` (UTC)."""
    config = RunConfig.model_validate(config_data)
    stamp = (at or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = config.run_id or f"run-{config.config_hash()[:12]}"
    data = config.model_dump(mode="json")
    data["run_id"] = f"{base}-{stamp}"
    data["schedule"] = {**data.get("schedule", {}), "incremental": True}
    return data


@flow(name="scheduled_label_features")
def scheduled_label_features(config_data: dict[str, Any]) -> str:
    """One scheduled run: `label_features` (as a subflow) on an incremental config with a fresh run id."""
    scheduled = flow_run.get_scheduled_start_time()
    at = scheduled if isinstance(scheduled, datetime) else None
    return label_features(scheduled_config(config_data, at))


def check_cron(cron: str) -> None:
    """Raises ConfigError, in one line, when Prefect would refuse `cron` as a cron schedule."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except ValidationError as exc:
        why = str(exc.errors()[0].get("msg", "")).removeprefix("Value error, ")
        raise ConfigError(f'--cron {cron!r} is not a cron schedule ({why}); e.g. "0 2 * * *" is 02:00 daily') from None


MAX_INTERVAL_S = 10 * 365 * 24 * 3600
"""Longest `--interval`: Prefect turns it into a timedelta, which overflows far beyond it (`1e20`)."""


def check_deployment_name(name: str) -> None:
    """Raises ConfigError unless `name` is a deployment name Prefect accepts: not blank, none of the
    characters Prefect bans in names."""
    from prefect.types.names import BANNED_CHARACTERS

    if not name.strip():
        raise ConfigError("--name must not be empty")
    banned = sorted({c for c in name if c in BANNED_CHARACTERS})
    if banned:
        allowed = f"a deployment name may not hold {' '.join(BANNED_CHARACTERS)}"
        raise ConfigError(f"--name {name[:80]!r} holds {' '.join(banned)}; {allowed}")


def build_deployment(
    config_data: dict[str, Any],
    *,
    cron: str | None = None,
    interval: float | None = None,
    name: str = DEFAULT_DEPLOYMENT,
) -> Any:
    """Returns the deployment (not yet served) of scheduled runs of one config."""
    if (cron is None) == (interval is None):
        raise ConfigError("give exactly one of --cron or --interval")
    if interval is not None and not 0 < interval <= MAX_INTERVAL_S:  # NaN fails too
        raise ConfigError(f"--interval must be a number of seconds above 0 and at most {MAX_INTERVAL_S:,} (10 years)")
    check_deployment_name(name)
    try:
        RunConfig.model_validate(config_data)  # a bad config fails now, not at 2 a.m.
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None
    if cron is not None:
        check_cron(cron)
    return scheduled_label_features.to_deployment(
        name=name,
        cron=cron,
        interval=interval,
        parameters={"config_data": config_data},
        description="Incremental labeling: explains only new or stale features; one fresh run id per run.",
        tags=["autointerp"],
    )


def serve_schedule(
    config_data: dict[str, Any],
    *,
    cron: str | None = None,
    interval: float | None = None,
    name: str = DEFAULT_DEPLOYMENT,
) -> None:
    """Registers the deployment with the Prefect API and runs its scheduled flow runs until interrupted."""
    from prefect import serve

    serve(build_deployment(config_data, cron=cron, interval=interval, name=name))
