-- Billing: the catalog (shared by every tenant), per-tenant customers, subscriptions,
-- invoices, credit notes, idempotency keys and applied provider events (row-level
-- security in PostgreSQL), and the scheduling index the billing scheduler reads
-- across tenants (ids and due times only). Times that are compared are Unix
-- microseconds. Records are JSON documents with their
-- keys, versions and unique constraints as columns.
CREATE TABLE billing_products (
    id BLOB PRIMARY KEY,
    created_at TEXT NOT NULL,
    doc TEXT NOT NULL
);

CREATE TABLE billing_plans (
    id BLOB PRIMARY KEY,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    doc TEXT NOT NULL
);

CREATE TABLE billing_customers (
    tenant_id BLOB PRIMARY KEY,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL
);

CREATE TABLE billing_subscriptions (
    tenant_id BLOB NOT NULL,
    id BLOB NOT NULL,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE billing_invoices (
    tenant_id BLOB NOT NULL,
    id BLOB NOT NULL,
    version INTEGER NOT NULL,
    subscription_id BLOB,
    status text NOT NULL,
    billing_key text NOT NULL,
    number text,
    doc TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT billing_invoices_billing_key UNIQUE (tenant_id, billing_key),
    CONSTRAINT billing_invoices_number UNIQUE (tenant_id, number)
);

CREATE TABLE billing_credit_notes (
    tenant_id BLOB NOT NULL,
    id BLOB NOT NULL,
    invoice_id BLOB NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX billing_credit_notes_invoice ON billing_credit_notes (tenant_id, invoice_id);

CREATE TABLE billing_idempotency (
    tenant_id BLOB NOT NULL,
    key text NOT NULL,
    fingerprint text NOT NULL,
    response TEXT NOT NULL,
    created_at_us INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX billing_idempotency_created ON billing_idempotency (created_at_us);

CREATE TABLE billing_provider_events (
    provider text NOT NULL,
    event_id text NOT NULL,
    tenant_id BLOB NOT NULL,
    PRIMARY KEY (provider, event_id)
);

CREATE TABLE billing_schedule (
    kind text NOT NULL,
    tenant_id BLOB NOT NULL,
    object_id BLOB NOT NULL,
    due_at_us INTEGER NOT NULL,
    PRIMARY KEY (kind, tenant_id, object_id)
);
CREATE INDEX billing_schedule_due ON billing_schedule (kind, due_at_us);
