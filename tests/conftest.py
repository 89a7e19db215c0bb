"""Fixtures every test directory may use: a throwaway PostgreSQL (``tests/pg_support.py``)."""

from pg_support import pg_cluster, pg_dsn

__all__ = ["pg_cluster", "pg_dsn"]
