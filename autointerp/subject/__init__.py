"""The subject model: loading, hook points and feature activations."""

from autointerp.subject.hooks import check_neuron_indices, mlp_down_proj, mlp_neuron_activations
from autointerp.subject.kinds import build_feature_source
from autointerp.subject.model import SubjectModel, load_subject_model, prepare_model_folder
from autointerp.subject.sources import FeatureSource

__all__ = [
    "FeatureSource",
    "SubjectModel",
    "build_feature_source",
    "check_neuron_indices",
    "load_subject_model",
    "mlp_down_proj",
    "mlp_neuron_activations",
    "prepare_model_folder",
]
