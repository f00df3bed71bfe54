"""The motive catalogue (data file + strict loader); the speech classifier joins it later."""

from .catalogue import Catalogue, Motive, Skill, default_catalogue_path

__all__ = ["Catalogue", "Motive", "Skill", "default_catalogue_path"]
