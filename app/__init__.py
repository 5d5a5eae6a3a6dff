"""dbpool: one bounded, monitored connection pool per registered external database."""

__version__ = "0.1.0"
