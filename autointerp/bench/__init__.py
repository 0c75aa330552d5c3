"""The planted-feature benchmark: scorers and explainers measured against features whose true
description is known (`planted`).

`settings` holds what it runs on, `windows` each feature's explanation and held-out windows, `planted`
the run (`run_bench`), `results` what it measured and `report` the Markdown report.
"""

from autointerp.bench.planted import run_bench
from autointerp.bench.report import pair_auroc, render_report, write_report
from autointerp.bench.results import BenchResult
from autointerp.bench.settings import BenchSettings, explainer_variants
from autointerp.bench.windows import feature_set

__all__ = [
    "BenchResult",
    "BenchSettings",
    "explainer_variants",
    "feature_set",
    "pair_auroc",
    "render_report",
    "run_bench",
    "write_report",
]
