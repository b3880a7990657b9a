"""crm: contacts, phones (unique E.164 index), tags, notes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 22:12:14.791110
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "crm_tag",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "crm_contact",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("company", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=254), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("crm_contact", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_crm_contact_name"), ["name"], unique=False)

    op.create_table(
        "crm_contact_phone",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("number", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("label", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["crm_contact.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("crm_contact_phone", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_crm_contact_phone_contact_id"), ["contact_id"], unique=False)
        batch_op.create_index("ux_crm_contact_phone_number", ["number"], unique=True)

    op.create_table(
        "crm_contact_tag",
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("tag_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["crm_contact.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tag_id"], ["crm_tag.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("contact_id", "tag_id"),
    )
    op.create_table(
        "crm_note",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=True),
        sa.Column("call_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("body", sqlmodel.sql.sqltypes.AutoString(length=4000), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["author_id"], ["users.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["call_id"], ["call.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["contact_id"], ["crm_contact.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("crm_note", schema=None) as batch_op:
        batch_op.create_index("ix_crm_note_contact_at", ["contact_id", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("crm_note", schema=None) as batch_op:
        batch_op.drop_index("ix_crm_note_contact_at")

    op.drop_table("crm_note")
    op.drop_table("crm_contact_tag")
    with op.batch_alter_table("crm_contact_phone", schema=None) as batch_op:
        batch_op.drop_index("ux_crm_contact_phone_number")
        batch_op.drop_index(batch_op.f("ix_crm_contact_phone_contact_id"))

    op.drop_table("crm_contact_phone")
    with op.batch_alter_table("crm_contact", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_crm_contact_name"))

    op.drop_table("crm_contact")
    op.drop_table("crm_tag")
