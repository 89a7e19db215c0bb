"""Fixtures of the orchestration unit tests: an initialised governor data directory."""

from gov_fixtures import gov_data, governor

__all__ = ["gov_data", "governor"]
