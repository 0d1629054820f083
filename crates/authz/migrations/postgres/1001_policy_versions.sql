-- Policy stores: one immutable row per (tenant, version); the whole policy set as JSON.
-- The primary key makes concurrent appends of the same version collide: one wins.
CREATE TABLE policy_versions (
    tenant_id uuid NOT NULL,
    version bigint NOT NULL,
    created_at timestamptz NOT NULL,
    change text NOT NULL,
    document jsonb NOT NULL,
    PRIMARY KEY (tenant_id, version)
);

ALTER TABLE policy_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE policy_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY policy_versions_tenant ON policy_versions
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
