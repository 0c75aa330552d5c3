"""The planted-feature benchmark: scorers and explainers measured against features whose true
description is known (`planted`)."""
