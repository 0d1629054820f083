-- OAuth2/OpenID Connect provider: clients, codes, grants, refresh tokens, consents,
-- revoked access tokens, client assertion ids, login sessions, signing keys.
-- Tenant rows are keyed by (tenant_id, handle), so two tenants may hold the same handle;
-- rows depending on a client go with it (ON DELETE CASCADE).

-- Client id -> owning tenant (NULL: a global client). Read first to learn a client's
-- scope; holds nothing secret.
CREATE TABLE oauth_client_owners (
    client_id BLOB PRIMARY KEY NOT NULL,
    tenant_id BLOB
);

CREATE TABLE oauth_clients (
    id BLOB PRIMARY KEY NOT NULL,
    tenant_id BLOB,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    auth_method TEXT NOT NULL,
    secret_digest BLOB,
    jwks TEXT,
    redirect_uris TEXT NOT NULL,
    post_logout_redirect_uris TEXT NOT NULL,
    grant_types TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX oauth_clients_tenant_idx ON oauth_clients (tenant_id, id);

CREATE TABLE oauth_codes (
    tenant_id BLOB NOT NULL,
    code_hash BLOB NOT NULL,
    client_id BLOB NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
    user_id BLOB NOT NULL,
    grant_id BLOB NOT NULL,
    redirect_uri TEXT NOT NULL,
    scope TEXT NOT NULL,
    nonce TEXT,
    code_challenge TEXT,
    auth_time TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    redeemed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, code_hash)
);
CREATE INDEX oauth_codes_client_idx ON oauth_codes (client_id);
CREATE INDEX oauth_codes_expiry_idx ON oauth_codes (expires_at);

CREATE TABLE oauth_grants (
    tenant_id BLOB NOT NULL,
    id BLOB NOT NULL,
    client_id BLOB NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
    user_id BLOB,
    scope TEXT NOT NULL,
    auth_time TEXT,
    created_at TEXT NOT NULL,
    revoked_at TEXT,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX oauth_grants_client_idx ON oauth_grants (client_id);

CREATE TABLE oauth_refresh_tokens (
    tenant_id BLOB NOT NULL,
    token_hash BLOB NOT NULL,
    grant_id BLOB NOT NULL,
    client_id BLOB NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
    scope TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    PRIMARY KEY (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, grant_id) REFERENCES oauth_grants (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX oauth_refresh_tokens_grant_idx ON oauth_refresh_tokens (tenant_id, grant_id);
CREATE INDEX oauth_refresh_tokens_client_idx ON oauth_refresh_tokens (client_id);
CREATE INDEX oauth_refresh_tokens_expiry_idx ON oauth_refresh_tokens (expires_at);

CREATE TABLE oauth_consents (
    tenant_id BLOB NOT NULL,
    user_id BLOB NOT NULL,
    client_id BLOB NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
    scope TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id, client_id)
);
CREATE INDEX oauth_consents_client_idx ON oauth_consents (client_id);

CREATE TABLE oauth_revoked_tokens (
    tenant_id BLOB NOT NULL,
    jti TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, jti)
);
CREATE INDEX oauth_revoked_tokens_expiry_idx ON oauth_revoked_tokens (expires_at);

-- Client assertion ids (`private_key_jwt`), kept until the assertion expires.
CREATE TABLE oauth_assertions (
    client_id BLOB NOT NULL,
    jti TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX oauth_assertions_expiry_idx ON oauth_assertions (expires_at);

CREATE TABLE oauth_sessions (
    id_hash BLOB PRIMARY KEY NOT NULL,
    user_id BLOB NOT NULL,
    auth_time TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX oauth_sessions_user_idx ON oauth_sessions (user_id);
CREATE INDEX oauth_sessions_expiry_idx ON oauth_sessions (expires_at);

CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY NOT NULL,
    alg TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    sealed_private_key BLOB NOT NULL,
    created_at TEXT NOT NULL,
    activates_at TEXT NOT NULL,
    retires_at TEXT,
    expires_at TEXT
);
