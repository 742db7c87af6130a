"""Alembic environment of the registry metadata store.

Migrations run only through ``SqlMetadataStore.migrate()``, which builds the Alembic
configuration in code and hands over an open connection inside a transaction; there is no
``alembic.ini`` and no URL here. Schemas are never hard-coded: tables and the version table land
in the connection's default schema (on PostgreSQL, the first entry of ``search_path``).

The version table has its own name so that other Strongroom stores can keep their own Alembic
histories in the same database.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

VERSION_TABLE = "strongroom_registry_version"


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise TypeError("run registry migrations through SqlMetadataStore.migrate()")
    context.configure(connection=connection, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
