"""Shared test helpers: database coordinates and the databases' own view of connections."""
