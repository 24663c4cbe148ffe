"""Initial schema: study, reader, case, case_order, answer.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "study",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("admin_token_hash", sa.String(64), nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
    )
    op.create_table(
        "reader",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("experience", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    )
    op.create_table(
        "case",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("image", sa.String(300), nullable=False),
        sa.Column("overlay", sa.String(300), nullable=False),
        sa.Column("source_image", sa.Text, nullable=False),
        sa.Column("truth", sa.String(200), nullable=False),
        sa.Column("ai", sa.JSON, nullable=False),
    )
    op.create_table(
        "case_order",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("reader_id", sa.Integer, sa.ForeignKey("reader.id"), nullable=False, index=True),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("case.id"), nullable=False),
        sa.Column("first_shown", sa.DateTime, nullable=True),
        sa.UniqueConstraint("reader_id", "round", "position"),
        sa.UniqueConstraint("reader_id", "round", "case_id"),
    )
    op.create_table(
        "answer",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("reader_id", sa.Integer, sa.ForeignKey("reader.id"), nullable=False, index=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("case.id"), nullable=False),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("diagnosis", sa.String(200), nullable=False),
        sa.Column("confidence", sa.Integer, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("server_seconds", sa.Float, nullable=True),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.UniqueConstraint("reader_id", "case_id", "round"),
    )


def downgrade() -> None:
    for table in ("answer", "case_order", "case", "reader", "study"):
        op.drop_table(table)
