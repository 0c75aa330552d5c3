"""Entry file for `prefect deploy flows/schedule.py:...` and `python flows/schedule.py`; the flow lives in
`autointerp.flows.schedule` (installed with the package)."""

from autointerp.flows.schedule import *  # noqa: F403
