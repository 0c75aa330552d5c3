"""Entry file for `prefect deploy flows/label_features.py:...` and `python flows/label_features.py`; the flow lives in
`autointerp.flows.label_features` (installed with the package)."""

from autointerp.flows.label_features import *  # noqa: F403
