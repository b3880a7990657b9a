"""call_draft: what an agent typed on a call and has not saved; not_ready_reason: the admin's own
not-ready reasons; campaign.wrap_up_hold: wrap-up waits for an unsaved outcome; agent.wrap_extra_s:
the wrap-up time an agent added; users.my_phone: the phone a supervisor listens in from

Revision ID: 0013
Revises: 0006
Create Date: 2026-12-04 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0013"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "call_draft",
        sa.Column("call_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("body", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("settled_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("call_id"),
    )
    op.create_index("ix_call_draft_agent", "call_draft", ["agent_id", "settled_at"])
    op.create_table(
        "not_ready_reason",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("label", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code"),
    )
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wrap_up_hold", sa.Boolean(), nullable=False, server_default=sa.true()))
    with op.batch_alter_table("agent", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wrap_extra_s", sa.Float(), nullable=False, server_default="0"))
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "my_phone", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False, server_default=""
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("my_phone")
    with op.batch_alter_table("agent", schema=None) as batch_op:
        batch_op.drop_column("wrap_extra_s")
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.drop_column("wrap_up_hold")
    op.drop_table("not_ready_reason")
    op.drop_index("ix_call_draft_agent", table_name="call_draft")
    op.drop_table("call_draft")
