"""Entry file for `prefect deploy flows/investigate.py:...` and `python flows/investigate.py`; the flow lives in
`autointerp.flows.investigate` (installed with the package)."""

from autointerp.flows.investigate import *  # noqa: F403
