"""Interoperability with other interpretability tools: exports (Neuronpedia, JSONL) and imports of
explanations written elsewhere (CSV, neuron-explainer, delphi)."""

from autointerp.interop.export import (
    EXPORT_FORMATS,
    export_run,
    jsonl_lines,
    neuronpedia_export,
    neuronpedia_records,
    neuronpedia_uploads,
)
from autointerp.interop.imports import IMPORT_TOOLS, ImportFileError, ImportResult, import_explanations

__all__ = [
    "EXPORT_FORMATS",
    "IMPORT_TOOLS",
    "ImportFileError",
    "ImportResult",
    "export_run",
    "import_explanations",
    "jsonl_lines",
    "neuronpedia_export",
    "neuronpedia_records",
    "neuronpedia_uploads",
]
