"""external_db_connections: replicas and maxReplicaLagSeconds (a registration as a cluster).

Revision ID: 0002_replicas
Revises: 0001_external_db_connections
Create Date: 2026-12-01 06:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002_replicas"
down_revision: str | None = "0001_external_db_connections"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "external_db_connections"
LAG_CHECK = "ck_external_db_connections_max_replica_lag_seconds"


def upgrade() -> None:
    # Batch mode: SQLite cannot add a CHECK constraint to an existing table.
    with op.batch_alter_table(TABLE) as batch:
        batch.add_column(
            sa.Column("replicas", sa.JSON(), server_default=sa.text("'[]'"), nullable=False)
        )
        batch.add_column(sa.Column("max_replica_lag_seconds", sa.Float(), nullable=True))
        batch.create_check_constraint(
            op.f(LAG_CHECK), "max_replica_lag_seconds IS NULL OR max_replica_lag_seconds > 0"
        )


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_constraint(op.f(LAG_CHECK), type_="check")
        batch.drop_column("max_replica_lag_seconds")
        batch.drop_column("replicas")
