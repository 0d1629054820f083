-- Outgoing webhooks: each tenant's endpoints and the deliveries of billing events to
-- them (row-level security in PostgreSQL), and the delivery schedule the dispatcher
-- reads across tenants (tenant id, delivery id and due time only). Times that are
-- compared are Unix microseconds. Records are JSON documents with their keys, versions
-- and unique constraints as columns.
CREATE TABLE webhook_endpoints (
    tenant_id BLOB NOT NULL,
    id BLOB NOT NULL,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

-- One delivery per endpoint and event: a redelivered bus event finds its row taken.
CREATE TABLE webhook_deliveries (
    tenant_id BLOB NOT NULL,
    id BLOB NOT NULL,
    endpoint_id BLOB NOT NULL,
    event_id BLOB NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT webhook_deliveries_event UNIQUE (tenant_id, endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (tenant_id, endpoint_id, id);

-- Pending deliveries only: a row is written and removed in the transaction that changes
-- its delivery.
CREATE TABLE webhook_schedule (
    tenant_id BLOB NOT NULL,
    delivery_id BLOB NOT NULL,
    due_at_us INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, delivery_id)
);
CREATE INDEX webhook_schedule_due ON webhook_schedule (due_at_us, delivery_id);
