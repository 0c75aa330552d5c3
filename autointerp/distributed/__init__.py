"""A run sharded over a Prefect work pool's workers: shard flow, exact merges, result parts, the parent."""

from autointerp.collect.merge_shards import ShardMergeError, merge_states
from autointerp.distributed.parts import ResultsDir, results_dir

__all__ = ["ResultsDir", "ShardMergeError", "merge_states", "results_dir"]
