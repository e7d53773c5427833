"""Alembic revisions, one linear history; file names start with a letter so they are importable modules."""
