"""ordering per appointment: webhooks may ask for it; deliveries name their appointment

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02

Existing deliveries get the appointment of their event, so that a webhook switched to
`"ordering": "appointment"` orders those still open as well.
"""

from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

OPEN_APPOINTMENT_DELIVERY = (
    "status IN ('pending', 'failed') AND appointment_id IS NOT NULL"
)


def upgrade() -> None:
    with op.batch_alter_table('webhook_subscriptions', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('ordering', sa.String(length=16), server_default='none', nullable=False)
        )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('appointment_id', sa.Integer(), nullable=True))
    op.execute(
        "UPDATE deliveries SET appointment_id = "
        "(SELECT appointment_id FROM events WHERE events.position = deliveries.event_position)"
    )
    op.create_index(
        'ix_deliveries_open_appointment',
        'deliveries',
        ['subscription_id', 'appointment_id', 'seq'],
        sqlite_where=sa.text(OPEN_APPOINTMENT_DELIVERY),
        postgresql_where=sa.text(OPEN_APPOINTMENT_DELIVERY),
    )


def downgrade() -> None:
    op.drop_index('ix_deliveries_open_appointment', table_name='deliveries')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('appointment_id')
    with op.batch_alter_table('webhook_subscriptions', schema=None) as batch_op:
        batch_op.drop_column('ordering')
