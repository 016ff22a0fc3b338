"""Studies pair a theoretical prediction with a measurement on real networks."""

from .base import STUDIES, Study, StudyConfig, get_study, make_config, parse_overrides, run_study

__all__ = ["STUDIES", "Study", "StudyConfig", "get_study", "make_config", "parse_overrides", "run_study"]
