-- Billing: the catalog (shared by every tenant), per-tenant customers, subscriptions,
-- invoices, credit notes, idempotency keys and applied provider events (row-level
-- security on `app.tenant_id`), and the scheduling index the billing scheduler reads
-- across tenants (ids and due times only). Times that are compared are Unix
-- microseconds. Records are JSON documents with their
-- keys, versions and unique constraints as columns.
CREATE TABLE billing_products (
    id uuid PRIMARY KEY,
    created_at timestamptz NOT NULL,
    doc jsonb NOT NULL
);

CREATE TABLE billing_plans (
    id uuid PRIMARY KEY,
    version bigint NOT NULL,
    created_at timestamptz NOT NULL,
    doc jsonb NOT NULL
);

CREATE TABLE billing_customers (
    tenant_id uuid PRIMARY KEY,
    version bigint NOT NULL,
    doc jsonb NOT NULL
);

CREATE TABLE billing_subscriptions (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL,
    version bigint NOT NULL,
    doc jsonb NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE billing_invoices (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL,
    version bigint NOT NULL,
    subscription_id uuid,
    status text NOT NULL,
    billing_key text NOT NULL,
    number text,
    doc jsonb NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT billing_invoices_billing_key UNIQUE (tenant_id, billing_key),
    CONSTRAINT billing_invoices_number UNIQUE (tenant_id, number)
);

CREATE TABLE billing_credit_notes (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL,
    invoice_id uuid NOT NULL,
    doc jsonb NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX billing_credit_notes_invoice ON billing_credit_notes (tenant_id, invoice_id);

CREATE TABLE billing_idempotency (
    tenant_id uuid NOT NULL,
    key text NOT NULL,
    fingerprint text NOT NULL,
    response jsonb NOT NULL,
    created_at_us bigint NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX billing_idempotency_created ON billing_idempotency (created_at_us);

CREATE TABLE billing_provider_events (
    provider text NOT NULL,
    event_id text NOT NULL,
    tenant_id uuid NOT NULL,
    PRIMARY KEY (provider, event_id)
);

CREATE TABLE billing_schedule (
    kind text NOT NULL,
    tenant_id uuid NOT NULL,
    object_id uuid NOT NULL,
    due_at_us bigint NOT NULL,
    PRIMARY KEY (kind, tenant_id, object_id)
);
CREATE INDEX billing_schedule_due ON billing_schedule (kind, due_at_us);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['billing_customers', 'billing_subscriptions', 'billing_invoices',
                             'billing_credit_notes', 'billing_idempotency',
                             'billing_provider_events']
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

-- Expired idempotency keys are purged across tenants by a transaction that sets
-- `app.billing_purge` (a DELETE with a WHERE clause needs the rows visible to SELECT
-- as well); no other transaction sees other tenants' keys.
CREATE POLICY billing_idempotency_purge_read ON billing_idempotency FOR SELECT
    USING (current_setting('app.billing_purge', true) = 'on');
CREATE POLICY billing_idempotency_purge ON billing_idempotency FOR DELETE
    USING (current_setting('app.billing_purge', true) = 'on');
