-- Identity: tenants, users, memberships, invitations, email verifications.
CREATE TABLE tenants (
    id BLOB PRIMARY KEY NOT NULL,
    slug TEXT NOT NULL CONSTRAINT tenants_slug_key UNIQUE,
    display_name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'deleted')),
    metadata TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version INTEGER NOT NULL
);

CREATE TABLE users (
    id BLOB PRIMARY KEY NOT NULL,
    email TEXT NOT NULL,
    email_normalized TEXT NOT NULL CONSTRAINT users_email_key UNIQUE,
    email_verified INTEGER NOT NULL,
    display_name TEXT NOT NULL,
    attributes TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    password_hash TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version INTEGER NOT NULL
);

CREATE TABLE memberships (
    id BLOB PRIMARY KEY NOT NULL,
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    user_id BLOB NOT NULL REFERENCES users (id),
    roles TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version INTEGER NOT NULL,
    CONSTRAINT memberships_tenant_user_key UNIQUE (tenant_id, user_id)
);
CREATE INDEX memberships_tenant_idx ON memberships (tenant_id, id);
CREATE INDEX memberships_user_idx ON memberships (user_id, id);

CREATE TABLE invitations (
    id BLOB PRIMARY KEY NOT NULL,
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    email TEXT NOT NULL,
    roles TEXT NOT NULL,
    token_hash BLOB NOT NULL CONSTRAINT invitations_token_key UNIQUE,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    accepted_at TEXT,
    accepted_by BLOB REFERENCES users (id)
);
CREATE INDEX invitations_tenant_idx ON invitations (tenant_id, id);

CREATE TABLE email_verifications (
    id BLOB PRIMARY KEY NOT NULL,
    user_id BLOB NOT NULL REFERENCES users (id),
    email TEXT NOT NULL,
    token_hash BLOB NOT NULL CONSTRAINT email_verifications_token_key UNIQUE,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    consumed_at TEXT
);
