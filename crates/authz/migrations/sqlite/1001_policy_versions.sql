-- Policy stores: one immutable row per (tenant, version); the whole policy set as JSON.
CREATE TABLE policy_versions (
    tenant_id BLOB NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    change TEXT NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (tenant_id, version)
);
