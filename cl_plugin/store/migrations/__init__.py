"""Alembic migrations of the store; ``Store.setup()`` runs them."""
