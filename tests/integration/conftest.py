"""Fixtures of the integration tests (shared with the conformance suite)."""

from gov_fixtures import gov_data, governor

__all__ = ["gov_data", "governor"]
