"""gateway.originates_per_s (the dialer's token bucket per PBX); dialer heartbeats and skill-group
leases, so several dialers share one database without sharing agents

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("gateway", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("originates_per_s", sa.Float(), nullable=False, server_default=sa.text("10"))
        )
    op.create_table(
        "dialer",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("host", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.Column("stopped_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("skill_group", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("dialer_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
        batch_op.add_column(sa.Column("lease_until", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("skill_group", schema=None) as batch_op:
        batch_op.drop_column("lease_until")
        batch_op.drop_column("dialer_id")
    op.drop_table("dialer")
    with op.batch_alter_table("gateway", schema=None) as batch_op:
        batch_op.drop_column("originates_per_s")
