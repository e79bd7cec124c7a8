"""In-memory stand-ins for the PostgreSQL stores, for tests and examples."""
