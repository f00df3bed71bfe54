"""The motive catalogue (data file + strict loader) and the transcript -> motive text classifier."""

from .catalogue import Catalogue, Motive, Skill, default_catalogue_path
from .classifier import MotiveClassifier, MotiveGuess, RejectRule, load_out_of_scope, normalize

__all__ = [
    "Catalogue",
    "Motive",
    "MotiveClassifier",
    "MotiveGuess",
    "RejectRule",
    "Skill",
    "default_catalogue_path",
    "load_out_of_scope",
    "normalize",
]
