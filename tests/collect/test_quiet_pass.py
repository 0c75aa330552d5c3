"""The second pass for features short of non-activating windows: it keeps exactly the quiet windows with the
smallest random keys, which the stream's reservoir can miss for a dense feature."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch

from autointerp.activations import fires_threshold
from autointerp.collect.keys import random_keys
from autointerp.collect.quiet_pass import (
    QuietPick,
    features_short_of_quiet,
    quiet_pick_for,
    quiet_window_bound,
    refill_quiet_windows,
)
from autointerp.collect.results import SamplingPlan
from autointerp.collect.stage import run_collect
from autointerp.collect.stream import StreamOptions, collect_exemplars
from autointerp.corpus.sources import Window, corpus_windows
from autointerp.store.database import Store
from autointerp.subject import SubjectModel, build_feature_source
from tests.conftest import tiny_config

CPU = torch.device("cpu")
PLAN = SamplingPlan(top_k=4, random_windows=4, quantiles=2, per_quantile=1)
WINDOWS, TOKENS = 400, 6


def _acts() -> torch.Tensor:
    """[windows, tokens, 3]: a dense feature, a sparse one, and one that fires in every window. The dense one's
    max is 14, so its threshold (1.4) lies inside the reservoir's bin (1, 2], where most of its windows (max in
    (1.5, 2]) fire and one in 16 (max in (1.1, 1.3]) does not: the firing ones crowd the quiet ones out."""
    g = torch.Generator().manual_seed(5)
    base = torch.rand(WINDOWS, TOKENS, generator=g)
    number = torch.arange(WINDOWS)
    value = torch.where(number % 16 == 3, 1.1 + 0.2 * base[:, 0], 1.5 + 0.5 * base[:, 0])
    value = torch.where(number % 50 == 0, torch.tensor(14.0), value)
    dense = value.unsqueeze(1) * torch.cat([torch.ones(WINDOWS, 1), base[:, 1:]], dim=1)  # the window max is `value`
    sparse = torch.where(base > 0.97, base, 0.0)
    everywhere = 1.0 + base
    return torch.stack([dense, sparse, everywhere], dim=-1)


def _windows() -> list[Window]:
    return [Window(doc_id=i, offset=0, token_ids=[i] * TOKENS) for i in range(WINDOWS)]


def _reader(acts: torch.Tensor):  # type: ignore[no-untyped-def]
    """An activation function over `_windows`: each window's token ids name its row."""
    return lambda ids: acts[ids[:, 0]]


def _smallest_quiet(window_max: torch.Tensor, plan: SamplingPlan) -> list[list[int]]:
    """Returns, per feature of window maxima [windows, features], the window numbers of its `random_windows`
    quiet windows with the smallest keys, by brute force."""
    windows, features = window_max.shape
    keys = random_keys(plan.seed, 0, features, 0, windows, CPU).tolist()
    chosen = []
    for f in range(features):
        threshold = fires_threshold(float(window_max[:, f].max()))
        quiet = [w for w in range(windows) if float(window_max[w, f]) < threshold]
        chosen.append(sorted(quiet, key=lambda w: (keys[f][w], w))[: plan.random_windows])
    return chosen


def _exact_quiet(acts: torch.Tensor, feature: int) -> list[int]:
    """Returns `_smallest_quiet` of one feature of the synthetic activations [windows, tokens, features]."""
    return _smallest_quiet(acts.amax(dim=1), PLAN)[feature]


def test_a_dense_feature_gets_the_quiet_windows_the_stream_missed() -> None:
    acts = _acts()
    options = StreamOptions(feature_indices=[0, 1, 2], window_tokens=TOKENS, batch_size=16)
    result = collect_exemplars(_windows(), _reader(acts), PLAN, options)
    before = {f: n for f, (_, n) in enumerate(result.window_counts())}
    assert before[0] < PLAN.random_windows  # the stream's reservoir came back short (it holds 25 quiet windows)
    assert features_short_of_quiet(result, PLAN) == [0]  # the sparse one is full, the third has none to give
    kept_sparse = [(e.window.doc_id, e.rank) for e in result.exemplars if e.feature_index == 1 and e.kind == "random"]
    assert refill_quiet_windows(result, _windows(), _reader(acts), PLAN, 7, CPU) == [0]
    quiet = sorted((e for e in result.exemplars if e.feature_index == 0 and e.kind == "random"), key=lambda e: e.rank)
    assert [e.window.doc_id for e in quiet] == _exact_quiet(acts, 0)
    assert [e.rank for e in quiet] == [0, 1, 2, 3] and all(e.split == "score" for e in quiet)
    for e in quiet:  # the window's own activations, every one under the threshold
        assert torch.equal(torch.tensor(e.activations), acts[e.window.doc_id, :, 0])
        assert max(e.activations) < fires_threshold(float(acts[:, :, 0].max()))
    assert result.window_counts()[0][1] == PLAN.random_windows
    # the other features' windows are untouched
    assert [(e.window.doc_id, e.rank) for e in result.exemplars if e.feature_index == 1 and e.kind == "random"] == (
        kept_sparse
    )


def test_chunks_on_the_feature_axis_another_corpus_and_a_finished_result() -> None:
    acts = _acts()
    options = StreamOptions(feature_indices=[0, 1, 2], window_tokens=TOKENS, batch_size=16)
    result = collect_exemplars(_windows(), _reader(acts), PLAN, options)

    def chunks(ids: torch.Tensor) -> list[torch.Tensor]:
        whole = acts[ids[:, 0]]
        return [whole[..., :1], whole[..., 1:]]

    before = list(result.exemplars)
    assert refill_quiet_windows(result, _windows()[:100], chunks, PLAN, 16, CPU) == []  # not the corpus collected
    assert result.exemplars == before
    assert refill_quiet_windows(result, _windows(), chunks, PLAN, 16, CPU) == [0]
    assert [
        e.window.doc_id
        for e in sorted(result.exemplars, key=lambda e: e.rank)
        if e.feature_index == 0 and e.kind == "random"
    ] == _exact_quiet(acts, 0)
    assert refill_quiet_windows(result, _windows(), chunks, PLAN, 16, CPU) == []  # nothing short any more


def test_picks_of_the_corpus_in_parts_merge_to_the_pick_of_the_whole() -> None:
    """A sharded run passes each shard's windows on its own (numbered as in the whole corpus) and merges the
    picks: the same windows as one pass, whatever the split, an empty part included."""
    acts = _acts()
    options = StreamOptions(feature_indices=[0, 1, 2], window_tokens=TOKENS, batch_size=16)
    result = collect_exemplars(_windows(), _reader(acts), PLAN, options)
    asked = quiet_pick_for(result, PLAN, CPU)
    assert asked is not None and asked.features == [0]
    states = []
    for start, end in ((0, 96), (96, 96), (96, 250), (250, WINDOWS)):
        part = QuietPick(asked.features, asked.thresholds, asked.wanted, asked.seed, CPU)
        windows = _windows()[start:end]
        for first in range(start, end, 16):
            batch = windows[first - start : first - start + 16]
            part.update(_reader(acts)(torch.tensor([w.token_ids for w in batch])), batch, first)
        states.append(part.state_dict())
    short = copy.deepcopy(result)
    assert QuietPick.merged(states[:2], CPU).apply(short) == []  # 96 windows read, 400 collected: as it was
    assert short.exemplars == result.exemplars
    assert QuietPick.merged(states, CPU).apply(result) == [0]
    quiet = sorted((e for e in result.exemplars if e.feature_index == 0 and e.kind == "random"), key=lambda e: e.rank)
    assert [e.window.doc_id for e in quiet] == _exact_quiet(acts, 0)
    for e in quiet:
        assert torch.equal(torch.tensor(e.activations), acts[e.window.doc_id, :, 0])


def test_the_histogram_bound_counts_the_bins_that_may_hold_quiet_windows() -> None:
    # bins: <= 0, (0, 1/64], (1/64, 1/32], ..., (128, 256], > 256; a max of 10 puts the threshold at 1
    histogram = [3, 1, 0, 0, 0, 0, 2, 5, 7, 0, 0, 0, 0, 0, 0, 0, 9]
    assert quiet_window_bound(histogram, 10.0) == 3 + 1 + 2 + 5  # (1/2, 1] may hold a quiet window, (1, 2] not
    assert quiet_window_bound(histogram, 0.0) == sum(histogram)  # nothing fires when the max is 0
    assert quiet_window_bound(histogram, math.inf) == sum(histogram)


def test_a_run_stores_the_exact_quiet_windows_of_dense_neurons(subject: SubjectModel, tmp_path: Path) -> None:
    """The real model, four dense neurons of block 15 on a tiny corpus: the stream alone keeps fewer quiet
    windows than the corpus holds for some of them; the stored ones are the quiet windows with the smallest
    keys, recomputed here from every window's activations."""
    config = tiny_config(tmp_path, "features.indices=[13, 67, 169, 240]")
    plan = SamplingPlan.from_config(config.collect)
    source = build_feature_source(config.features, subject)
    windows = list(corpus_windows(subject.tokenizer, config.corpus))
    options = StreamOptions(
        feature_indices=source.indices, window_tokens=24, batch_size=16, skipped_tokens=source.skipped_tokens
    )
    streamed = collect_exemplars(windows, source.activation_chunks, plan, options).window_counts()
    store = Store(config.store.path)
    store.migrate()
    run_id = config.resolved_run_id()
    store.start_run(run_id, {}, config.config_hash(), "test", None)
    run_collect(config, store, run_id)
    ids = torch.tensor([w.token_ids for w in windows])
    with torch.inference_mode():
        window_max = source.activations(ids).amax(dim=1)  # [windows, features]
    gained = 0
    for f, (feature_id, exact) in enumerate(zip(source.feature_ids, _smallest_quiet(window_max, plan), strict=True)):
        stored = store.query(
            "SELECT doc_id, token_offset FROM exemplars WHERE run_id = ? AND feature_id = ? AND kind = 'random' "
            "ORDER BY rank",
            [run_id, feature_id],
        )
        assert [(r["doc_id"], r["token_offset"]) for r in stored] == [
            (windows[w].doc_id, windows[w].offset) for w in exact
        ], feature_id
        gained += len(exact) > streamed[f][1]
    assert gained >= 1  # the pass found quiet windows the stream had missed


def test_the_whole_stream_is_checkpointed_before_the_pass(tmp_path: Path) -> None:
    """A run stopped in the quiet-window pass (or the write) resumes without reading the corpus through the stream
    again: the state is saved when the stream ends, not only every `checkpoint_every` batches."""
    acts, path = _acts(), tmp_path / "run.collect.pt"
    options = StreamOptions(
        feature_indices=[0, 1, 2],
        window_tokens=TOKENS,
        batch_size=16,
        checkpoint=path,
        checkpoint_every=1000,
        fingerprint="fp",
    )
    first = collect_exemplars(_windows(), _reader(acts), PLAN, options)
    assert path.exists()
    read: list[int] = []

    def counting(ids: torch.Tensor) -> torch.Tensor:
        read.append(len(ids))
        return acts[ids[:, 0]]

    again = collect_exemplars(_windows(), counting, PLAN, options)
    assert read == [] and again.window_counts() == first.window_counts()
