"""events ordered by transaction, then position

Revision ID: 0012
Revises: 0005
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Events and the relay's position from before get transaction 0: they committed in
    # position order before any event that records its transaction, so a stored position
    # p becomes (0, p) and reads on exactly where it stopped.
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('txid', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.drop_index('ix_events_org_position')
        batch_op.drop_index('ix_events_org_type_position')
        batch_op.create_index('ix_events_txid_position', ['txid', 'position'], unique=False)
        batch_op.create_index('ix_events_org_txid_position', ['organization_id', 'txid', 'position'], unique=False)
        batch_op.create_index('ix_events_org_type_txid_position', ['organization_id', 'type', 'txid', 'position'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        # Every insert from now on, whatever writes it, records its transaction (13+).
        op.alter_column('events', 'txid', server_default=sa.text('(pg_current_xact_id()::text::bigint)'))
    with op.batch_alter_table('relay_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('txid', sa.BigInteger(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('relay_state', schema=None) as batch_op:
        batch_op.drop_column('txid')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_org_type_txid_position')
        batch_op.drop_index('ix_events_org_txid_position')
        batch_op.drop_index('ix_events_txid_position')
        batch_op.create_index('ix_events_org_type_position', ['organization_id', 'type', 'position'], unique=False)
        batch_op.create_index('ix_events_org_position', ['organization_id', 'position'], unique=False)
        batch_op.drop_column('txid')
