-- Transactional outbox: events written in the same transaction as the change that
-- implies them; the relay publishes pending rows in `seq` order and stamps `sent_at`.
-- Not tenant data read by tenants (the relay reads across tenants, so no row-level
-- security), but rows keep their `tenant_id`. `seq` comes from an identity column:
-- the application role needs only INSERT on the table to use it.
CREATE TABLE event_outbox (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id uuid NOT NULL CONSTRAINT event_outbox_event_key UNIQUE,
    topic text NOT NULL,
    tenant_id uuid NOT NULL,
    payload jsonb NOT NULL,
    sent_at timestamptz
);
CREATE INDEX event_outbox_pending_idx ON event_outbox (seq) WHERE sent_at IS NULL;
CREATE INDEX event_outbox_sent_idx ON event_outbox (sent_at) WHERE sent_at IS NOT NULL;
