"""Conformance tests: one test per guarantee proctor makes against a hostile principal,
a compromised process or a broken disk. Each is named after the rule it checks.
"""

from gov_fixtures import gov_data, governor

__all__ = ["gov_data", "governor"]
