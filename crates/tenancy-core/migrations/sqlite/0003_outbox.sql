-- Transactional outbox: events written in the same transaction as the change that
-- implies them; the relay publishes pending rows in `seq` order and stamps `sent_at`.
-- Not tenant data read by tenants (the relay reads across tenants), but rows keep
-- their `tenant_id`.
CREATE TABLE event_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id BLOB NOT NULL CONSTRAINT event_outbox_event_key UNIQUE,
    topic TEXT NOT NULL,
    tenant_id BLOB NOT NULL,
    payload TEXT NOT NULL,
    sent_at TEXT
);
CREATE INDEX event_outbox_pending_idx ON event_outbox (seq) WHERE sent_at IS NULL;
CREATE INDEX event_outbox_sent_idx ON event_outbox (sent_at) WHERE sent_at IS NOT NULL;
