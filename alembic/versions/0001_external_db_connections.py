"""external_db_connections: the registry of external databases.

Revision ID: 0001_external_db_connections
Revises:
Create Date: 2025-01-13 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0001_external_db_connections"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "external_db_connections"
# Constraint names are spelled out in full and wrapped in op.f() so Alembic does not
# apply the model's naming convention to them a second time.


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("db_type", sa.String(20), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("database", sa.String(255), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("password_encrypted", sa.Text(), nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("max_connections", sa.Integer(), server_default=sa.text("10"), nullable=False),
        sa.Column("min_connections", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("connection_timeout", sa.Float(), server_default=sa.text("30"), nullable=False),
        sa.Column("query_timeout", sa.Float(), server_default=sa.text("60"), nullable=False),
        sa.Column("read_only", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("options", sa.JSON(), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("config_version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_external_db_connections")),
        sa.UniqueConstraint("name", name=op.f("uq_external_db_connections_name")),
        sa.CheckConstraint(
            "db_type IN ('postgresql', 'mysql', 'mariadb')",
            name=op.f("ck_external_db_connections_db_type"),
        ),
        sa.CheckConstraint(
            "port BETWEEN 1 AND 65535", name=op.f("ck_external_db_connections_port")
        ),
        sa.CheckConstraint(
            "max_connections BETWEEN 1 AND 1000",
            name=op.f("ck_external_db_connections_max_connections"),
        ),
        sa.CheckConstraint(
            "min_connections >= 0 AND min_connections <= max_connections",
            name=op.f("ck_external_db_connections_min_connections"),
        ),
        sa.CheckConstraint(
            "connection_timeout > 0", name=op.f("ck_external_db_connections_connection_timeout")
        ),
        sa.CheckConstraint(
            "query_timeout > 0", name=op.f("ck_external_db_connections_query_timeout")
        ),
    )


def downgrade() -> None:
    op.drop_table(TABLE)
