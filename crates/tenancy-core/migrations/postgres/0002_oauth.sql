-- OAuth2/OpenID Connect provider: clients, codes, grants, refresh tokens, consents,
-- revoked access tokens, client assertion ids, login sessions, signing keys.
-- Tenant rows are keyed by (tenant_id, handle), so two tenants may hold the same handle;
-- rows depending on a client go with it (ON DELETE CASCADE; referential actions are
-- not filtered by row-level security, so a global client's rows go in every tenant).
--
-- Row-level security (ENABLE + FORCE) on every tenant table, keyed on the
-- transaction-local `app.tenant_id`. `purge_expired` runs without a tenant and sets
-- `app.purge_before` instead: the purge policies let it see and delete only rows that
-- expired before that instant, in every tenant, and never insert or update.

-- Client id -> owning tenant (NULL: a global client). Client ids arrive before any
-- tenant is known: this directory (no RLS, nothing secret) tells the scope in which
-- to read the client.
CREATE TABLE oauth_client_owners (
    client_id uuid PRIMARY KEY,
    tenant_id uuid
);

CREATE TABLE oauth_clients (
    id uuid PRIMARY KEY,
    tenant_id uuid,
    name text NOT NULL,
    kind text NOT NULL,
    auth_method text NOT NULL,
    secret_digest bytea,
    jwks jsonb,
    redirect_uris jsonb NOT NULL,
    post_logout_redirect_uris jsonb NOT NULL,
    grant_types jsonb NOT NULL,
    scopes text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version bigint NOT NULL
);
CREATE INDEX oauth_clients_tenant_idx ON oauth_clients (tenant_id, id);

CREATE TABLE oauth_codes (
    tenant_id uuid NOT NULL,
    code_hash bytea NOT NULL,
    client_id uuid NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
    user_id uuid NOT NULL,
    grant_id uuid NOT NULL,
    redirect_uri text NOT NULL,
    scope text NOT NULL,
    nonce text,
    code_challenge text,
    auth_time timestamptz NOT NULL,
    issued_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    redeemed boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, code_hash)
);
CREATE INDEX oauth_codes_client_idx ON oauth_codes (client_id);
CREATE INDEX oauth_codes_expiry_idx ON oauth_codes (expires_at);

CREATE TABLE oauth_grants (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL,
    client_id uuid NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
    user_id uuid,
    scope text NOT NULL,
    auth_time timestamptz,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX oauth_grants_client_idx ON oauth_grants (client_id);

CREATE TABLE oauth_refresh_tokens (
    tenant_id uuid NOT NULL,
    token_hash bytea NOT NULL,
    grant_id uuid NOT NULL,
    client_id uuid NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
    scope text NOT NULL,
    issued_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    PRIMARY KEY (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, grant_id) REFERENCES oauth_grants (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX oauth_refresh_tokens_grant_idx ON oauth_refresh_tokens (tenant_id, grant_id);
CREATE INDEX oauth_refresh_tokens_client_idx ON oauth_refresh_tokens (client_id);
CREATE INDEX oauth_refresh_tokens_expiry_idx ON oauth_refresh_tokens (expires_at);

CREATE TABLE oauth_consents (
    tenant_id uuid NOT NULL,
    user_id uuid NOT NULL,
    client_id uuid NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
    scope text NOT NULL,
    granted_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, user_id, client_id)
);
CREATE INDEX oauth_consents_client_idx ON oauth_consents (client_id);

CREATE TABLE oauth_revoked_tokens (
    tenant_id uuid NOT NULL,
    jti text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, jti)
);
CREATE INDEX oauth_revoked_tokens_expiry_idx ON oauth_revoked_tokens (expires_at);

-- Not tenant data (no RLS): client assertion ids, login sessions, signing keys.
CREATE TABLE oauth_assertions (
    client_id uuid NOT NULL,
    jti text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX oauth_assertions_expiry_idx ON oauth_assertions (expires_at);

CREATE TABLE oauth_sessions (
    id_hash bytea PRIMARY KEY,
    user_id uuid NOT NULL,
    auth_time timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX oauth_sessions_user_idx ON oauth_sessions (user_id);
CREATE INDEX oauth_sessions_expiry_idx ON oauth_sessions (expires_at);

CREATE TABLE signing_keys (
    kid text PRIMARY KEY,
    alg text NOT NULL,
    public_jwk jsonb NOT NULL,
    sealed_private_key bytea NOT NULL,
    created_at timestamptz NOT NULL,
    activates_at timestamptz NOT NULL,
    retires_at timestamptz,
    expires_at timestamptz
);

-- Clients: global ones are visible in every scope, a tenant's only in its own.
ALTER TABLE oauth_clients ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_clients FORCE ROW LEVEL SECURITY;
CREATE POLICY oauth_clients_scope ON oauth_clients
    USING (tenant_id IS NULL OR tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id IS NULL OR tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

ALTER TABLE oauth_codes ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_codes FORCE ROW LEVEL SECURITY;
CREATE POLICY oauth_codes_tenant ON oauth_codes
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY oauth_codes_purge_read ON oauth_codes FOR SELECT
    USING (expires_at < NULLIF(current_setting('app.purge_before', true), '')::timestamptz);
CREATE POLICY oauth_codes_purge ON oauth_codes FOR DELETE
    USING (expires_at < NULLIF(current_setting('app.purge_before', true), '')::timestamptz);

ALTER TABLE oauth_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_grants FORCE ROW LEVEL SECURITY;
CREATE POLICY oauth_grants_tenant ON oauth_grants
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

ALTER TABLE oauth_refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_refresh_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY oauth_refresh_tokens_tenant ON oauth_refresh_tokens
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY oauth_refresh_tokens_purge_read ON oauth_refresh_tokens FOR SELECT
    USING (expires_at < NULLIF(current_setting('app.purge_before', true), '')::timestamptz);
CREATE POLICY oauth_refresh_tokens_purge ON oauth_refresh_tokens FOR DELETE
    USING (expires_at < NULLIF(current_setting('app.purge_before', true), '')::timestamptz);

ALTER TABLE oauth_consents ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_consents FORCE ROW LEVEL SECURITY;
CREATE POLICY oauth_consents_tenant ON oauth_consents
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

ALTER TABLE oauth_revoked_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_revoked_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY oauth_revoked_tokens_tenant ON oauth_revoked_tokens
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY oauth_revoked_tokens_purge_read ON oauth_revoked_tokens FOR SELECT
    USING (expires_at < NULLIF(current_setting('app.purge_before', true), '')::timestamptz);
CREATE POLICY oauth_revoked_tokens_purge ON oauth_revoked_tokens FOR DELETE
    USING (expires_at < NULLIF(current_setting('app.purge_before', true), '')::timestamptz);
