"""Where calls and outbox rows live: SQLite and PostgreSQL backends, migrations."""
