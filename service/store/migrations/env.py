"""Alembic environment: runs migrations on the engine the service hands it."""

from alembic import context

from service.store.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    if engine.dialect.name == "postgresql":
        # A migration may rewrite a large table: no DATABASE_TIMEOUT for it.
        connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=engine.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
