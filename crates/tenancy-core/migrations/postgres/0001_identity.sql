-- Identity: tenants, users, memberships, invitations, email verifications.
-- Tenants and users are global registries. Tenant-scoped tables have ROW LEVEL
-- SECURITY (FORCE, so the owner is bound too) keyed on the transaction-local setting
-- `app.tenant_id`, which the backend sets in every transaction.
CREATE TABLE tenants (
    id uuid PRIMARY KEY,
    slug text NOT NULL CONSTRAINT tenants_slug_key UNIQUE,
    display_name text NOT NULL,
    status text NOT NULL CHECK (status IN ('active', 'suspended', 'deleted')),
    metadata jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version bigint NOT NULL
);

CREATE TABLE users (
    id uuid PRIMARY KEY,
    email text NOT NULL,
    email_normalized text NOT NULL CONSTRAINT users_email_key UNIQUE,
    email_verified boolean NOT NULL,
    display_name text NOT NULL,
    attributes jsonb NOT NULL,
    status text NOT NULL CHECK (status IN ('active', 'disabled')),
    password_hash text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version bigint NOT NULL
);

CREATE TABLE memberships (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    user_id uuid NOT NULL REFERENCES users (id),
    roles jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version bigint NOT NULL,
    CONSTRAINT memberships_tenant_user_key UNIQUE (tenant_id, user_id)
);
CREATE INDEX memberships_tenant_idx ON memberships (tenant_id, id);
CREATE INDEX memberships_user_idx ON memberships (user_id, id);

CREATE TABLE invitations (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    email text NOT NULL,
    roles jsonb NOT NULL,
    token_hash bytea NOT NULL CONSTRAINT invitations_token_key UNIQUE,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    accepted_at timestamptz,
    accepted_by uuid REFERENCES users (id)
);
CREATE INDEX invitations_tenant_idx ON invitations (tenant_id, id);

CREATE TABLE email_verifications (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id),
    email text NOT NULL,
    token_hash bytea NOT NULL CONSTRAINT email_verifications_token_key UNIQUE,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    consumed_at timestamptz
);

ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
-- Everything within the current tenant.
CREATE POLICY memberships_tenant ON memberships
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
-- A user may read their own memberships across tenants (set only for that read).
CREATE POLICY memberships_self ON memberships FOR SELECT
    USING (user_id = NULLIF(current_setting('app.user_id', true), '')::uuid);

ALTER TABLE invitations ENABLE ROW LEVEL SECURITY;
ALTER TABLE invitations FORCE ROW LEVEL SECURITY;
CREATE POLICY invitations_tenant ON invitations
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
