"""Observe: stream the corpus through a feature source and keep, per feature, top, quantile and
non-activating windows and statistics (`sampler`, `stream`), with random keys and bins (`keys`), the
compiled CPU merge (`merge_batch_cpu`), the token histogram (`histogram`), checkpoints, exact shard
merges (`merge_shards`) and the stage function (`stage.run_collect`)."""
