"""Alembic migrations of the store's schema (run by ``bureaucrat.store.schema``)."""
