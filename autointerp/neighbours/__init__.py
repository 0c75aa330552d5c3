"""Neighbours of a feature: the nearest features by write-direction cosine (`cosine`) and by how often
they fire in the same windows (`cooccurrence`), stored per run and read by hard negatives, hard
distractors, the intruder scorer and the review app.

This package's face is torch-free (`Neighbour`); the computations live in `cosine` and `cooccurrence`.
"""

from autointerp.neighbours.records import NEIGHBOUR_KINDS, Neighbour, NeighbourKind

__all__ = ["NEIGHBOUR_KINDS", "Neighbour", "NeighbourKind"]
