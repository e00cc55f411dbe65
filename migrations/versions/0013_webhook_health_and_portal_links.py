"""webhook health (attempts name their webhook, indexes for health reads); portal links

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
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


    op.create_table(
        'portal_links',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('organization_id', sa.Integer(), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('session_hash', sa.String(length=64), nullable=True),
        sa.Column('read_only', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('opened_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ['organization_id'], ['organizations.id'],
            name=op.f('fk_portal_links_organization_id_organizations'),
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_portal_links')),
        sa.UniqueConstraint('session_hash', name=op.f('uq_portal_links_session_hash')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_portal_links_token_hash')),
    )
    op.create_index(
        op.f('ix_portal_links_organization_id'), 'portal_links', ['organization_id'], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f('ix_portal_links_organization_id'), table_name='portal_links')
    op.drop_table('portal_links')
    op.drop_index('ix_deliveries_open_sub_next', table_name='deliveries')
    op.drop_index('ix_delivery_attempts_sub_failed', table_name='delivery_attempts')
    op.drop_index('ix_delivery_attempts_sub_succeeded', table_name='delivery_attempts')
    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.drop_column('subscription_id')
