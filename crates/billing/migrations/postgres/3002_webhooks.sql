-- Outgoing webhooks: each tenant's endpoints and the deliveries of billing events to
-- them (row-level security on `app.tenant_id`, like the billing tables), and the
-- delivery schedule the dispatcher reads across tenants (tenant id, delivery id and due
-- time only). Times that are compared are Unix microseconds. Records are JSON documents
-- with their keys, versions and unique constraints as columns.
CREATE TABLE webhook_endpoints (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL,
    version bigint NOT NULL,
    doc jsonb NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

-- One delivery per endpoint and event: a redelivered bus event finds its row taken.
CREATE TABLE webhook_deliveries (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL,
    endpoint_id uuid NOT NULL,
    event_id uuid NOT NULL,
    doc jsonb NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT webhook_deliveries_event UNIQUE (tenant_id, endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (tenant_id, endpoint_id, id);

-- Pending deliveries only: a row is written and removed in the transaction that changes
-- its delivery.
CREATE TABLE webhook_schedule (
    tenant_id uuid NOT NULL,
    delivery_id uuid NOT NULL,
    due_at_us bigint NOT NULL,
    PRIMARY KEY (tenant_id, delivery_id)
);
CREATE INDEX webhook_schedule_due ON webhook_schedule (due_at_us, delivery_id);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['webhook_endpoints', 'webhook_deliveries']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY %I ON %I '
            'USING (tenant_id = NULLIF(current_setting(''app.tenant_id'', true), '''')::uuid) '
            'WITH CHECK (tenant_id = NULLIF(current_setting(''app.tenant_id'', true), '''')::uuid)',
            t || '_tenant', t);
    END LOOP;
END $$;
