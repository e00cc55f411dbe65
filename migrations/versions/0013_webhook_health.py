"""webhook health: attempts name their webhook; indexes for health reads

Revision ID: 0013
Revises: 0005
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0005'
branch_labels = None
depends_on = None

OPEN_DELIVERY = "status IN ('pending', 'failed')"


def upgrade() -> None:
    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('subscription_id', sa.Integer(), nullable=True))
    op.execute(
        "UPDATE delivery_attempts SET subscription_id = "
        "(SELECT subscription_id FROM deliveries WHERE deliveries.seq = delivery_attempts.delivery_seq)"
    )
    for name, where in (
        ('ix_delivery_attempts_sub_succeeded', 'error IS NULL'),
        ('ix_delivery_attempts_sub_failed', 'error IS NOT NULL'),
    ):
        op.create_index(
            name,
            'delivery_attempts',
            ['subscription_id', 'started_at'],
            sqlite_where=sa.text(where),
            postgresql_where=sa.text(where),
        )
    op.create_index(
        'ix_deliveries_open_sub_next',
        'deliveries',
        ['subscription_id', 'next_attempt_at'],
        sqlite_where=sa.text(OPEN_DELIVERY),
        postgresql_where=sa.text(OPEN_DELIVERY),
    )


def downgrade() -> None:
    op.drop_index('ix_deliveries_open_sub_next', table_name='deliveries')
    op.drop_index('ix_delivery_attempts_sub_failed', table_name='delivery_attempts')
    op.drop_index('ix_delivery_attempts_sub_succeeded', table_name='delivery_attempts')
    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.drop_column('subscription_id')
