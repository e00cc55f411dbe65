"""personal data: data keys per appointment, sealed event values, erasures, payload retention

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02

Events written before are sealed here, once: each appointment gets a data key and its
events' personal values move, encrypted, into `events.sealed`. Ids, positions and sequences
stay as they are. This needs MONCRENEAU_SECRET_KEY (or the embedded mode's key file).
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
_BATCH = 1000

_appointments = sa.table(
    'appointments',
    sa.column('id', sa.Integer()),
    sa.column('organization_id', sa.Integer()),
    sa.column('email', sa.String()),
    sa.column('phone', sa.String()),
    sa.column('created_at', sa.DateTime(timezone=True)),
)
_keys = sa.table(
    'personal_keys',
    sa.column('appointment_id', sa.Integer()),
    sa.column('organization_id', sa.Integer()),
    sa.column('key', sa.Text()),
    sa.column('email_index', sa.String()),
    sa.column('phone_index', sa.String()),
    sa.column('created_at', sa.DateTime(timezone=True)),
)
_events = sa.table(
    'events',
    sa.column('position', sa.BigInteger()),
    sa.column('id', sa.String()),
    sa.column('appointment_id', sa.Integer()),
    sa.column('data', _JSON),
    sa.column('object', _JSON),
    sa.column('previous_attributes', _JSON),
    sa.column('sealed', sa.Text()),
)


def _vault():
    from moncreneau.config import Settings
    from moncreneau.personal import Vault
    from moncreneau.secretbox import resolve_key

    vault = op.get_context().config.attributes.get('vault')
    return vault or Vault(resolve_key(Settings.from_env()))


def _event_batches(connection, where):
    after = 0
    while True:
        rows = connection.execute(
            sa.select(_events)
            .where(_events.c.position > after, _events.c.appointment_id.is_not(None), where)
            .order_by(_events.c.position)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        yield rows
        after = rows[-1].position


def _seal_existing(connection) -> None:
    from moncreneau import personal

    if connection.execute(sa.select(_appointments.c.id).limit(1)).first() is None:
        return
    vault = _vault()
    keys = {}
    for row in connection.execute(sa.select(_appointments).order_by(_appointments.c.id)):
        raw, sealed = vault.new_key()
        keys[row.id] = raw
        connection.execute(
            _keys.insert().values(
                appointment_id=row.id,
                organization_id=row.organization_id,
                key=sealed,
                email_index=vault.index(personal.EMAIL, row.email),
                phone_index=vault.index(personal.PHONE, row.phone),
                created_at=row.created_at,
            )
        )
    for rows in _event_batches(connection, _events.c.sealed.is_(None)):
        for row in rows:
            key = keys.get(row.appointment_id)
            if key is None:
                continue
            clear, taken = personal.split(
                personal.Parts(row.data, {'erasedAt': None, **row.object}, row.previous_attributes)
            )
            connection.execute(
                _events.update()
                .where(_events.c.position == row.position)
                .values(
                    data=clear.data,
                    object=clear.object,
                    previous_attributes=clear.previous_attributes,
                    sealed=personal.encrypt(key, row.id, taken) if taken else None,
                )
            )


def _open_existing(connection) -> None:
    from moncreneau import personal

    if connection.execute(sa.select(_keys.c.appointment_id).limit(1)).first() is None:
        return
    vault = _vault()
    keys = {
        row.appointment_id: vault.unwrap(row.key)
        for row in connection.execute(sa.select(_keys.c.appointment_id, _keys.c.key))
    }
    for rows in _event_batches(connection, _events.c.sealed.is_not(None)):
        for row in rows:
            key = keys.get(row.appointment_id)
            taken = personal.decrypt(key, row.id, row.sealed) if key else None
            opened = personal.merge(
                personal.Parts(row.data, row.object, row.previous_attributes), taken or {}
            )
            connection.execute(
                _events.update()
                .where(_events.c.position == row.position)
                .values(
                    data=opened.data,
                    object={k: v for k, v in opened.object.items() if k != 'erasedAt'},
                    previous_attributes=opened.previous_attributes,
                )
            )


def upgrade() -> None:
    op.create_table('personal_keys',
    sa.Column('appointment_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('organization_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('email_index', sa.String(length=64), nullable=True),
    sa.Column('phone_index', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_personal_keys_organization_id_organizations')),
    sa.PrimaryKeyConstraint('appointment_id', name=op.f('pk_personal_keys'))
    )
    with op.batch_alter_table('personal_keys', schema=None) as batch_op:
        batch_op.create_index('ix_personal_keys_email', ['organization_id', 'email_index'], unique=False)
        batch_op.create_index('ix_personal_keys_phone', ['organization_id', 'phone_index'], unique=False)

    op.create_table('erasures',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('organization_id', sa.Integer(), nullable=False),
    sa.Column('selector', sa.String(length=16), nullable=False),
    sa.Column('requested_by', sa.String(length=32), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('appointment_ids', _JSON, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_erasures_organization_id_organizations')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_erasures')),
    sa.UniqueConstraint('id', name=op.f('uq_erasures_id'))
    )
    with op.batch_alter_table('erasures', schema=None) as batch_op:
        batch_op.create_index('ix_erasures_org_seq', ['organization_id', 'seq'], unique=False)
        batch_op.create_index('ix_erasures_status', ['status'], unique=False)

    with op.batch_alter_table('appointments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('erased_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.alter_column('name', existing_type=sa.String(length=200), nullable=True)
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sealed', sa.Text(), nullable=True))
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('appointment_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_idempotency_keys_appointment_id'), ['appointment_id'], unique=False)
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('purged_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.alter_column('body', existing_type=sa.Text(), nullable=True)
        batch_op.create_index(
            'ix_deliveries_unpurged',
            ['updated_at'],
            unique=False,
            postgresql_where=sa.text('purged_at IS NULL'),
            sqlite_where=sa.text('purged_at IS NULL'),
        )

    _seal_existing(op.get_bind())


def downgrade() -> None:
    _open_existing(op.get_bind())
    op.execute("UPDATE deliveries SET body = '' WHERE body IS NULL")
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_unpurged')
        batch_op.alter_column('body', existing_type=sa.Text(), nullable=False)
        batch_op.drop_column('purged_at')
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_idempotency_keys_appointment_id'))
        batch_op.drop_column('appointment_id')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_column('sealed')
    op.execute("UPDATE appointments SET name = '' WHERE name IS NULL")
    with op.batch_alter_table('appointments', schema=None) as batch_op:
        batch_op.alter_column('name', existing_type=sa.String(length=200), nullable=False)
        batch_op.drop_column('erased_at')
    with op.batch_alter_table('erasures', schema=None) as batch_op:
        batch_op.drop_index('ix_erasures_status')
        batch_op.drop_index('ix_erasures_org_seq')
    op.drop_table('erasures')
    with op.batch_alter_table('personal_keys', schema=None) as batch_op:
        batch_op.drop_index('ix_personal_keys_phone')
        batch_op.drop_index('ix_personal_keys_email')
    op.drop_table('personal_keys')
