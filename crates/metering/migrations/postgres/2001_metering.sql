-- Metering: meters, events (deduplicated on (tenant_id, id) forever), rollups per
-- (meter, window, group), unique-count sets, quotas and quota counters. Window starts
-- and quota periods are Unix seconds; values are exact numerics.
CREATE TABLE usage_meters (
    tenant_id uuid NOT NULL,
    meter_key text NOT NULL,
    version bigint NOT NULL,
    definition jsonb NOT NULL,
    PRIMARY KEY (tenant_id, meter_key)
);

CREATE TABLE usage_events (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL,
    event_type text NOT NULL,
    source text NOT NULL,
    subject text NOT NULL,
    time timestamptz NOT NULL,
    data jsonb NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE usage_rollups (
    tenant_id uuid NOT NULL,
    meter_key text NOT NULL,
    window_size text NOT NULL,
    window_start bigint NOT NULL,
    group_key text NOT NULL,
    events bigint NOT NULL,
    value numeric NOT NULL,
    latest_time timestamptz,
    latest_id uuid,
    saturated boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, meter_key, window_size, window_start, group_key)
);

CREATE TABLE usage_unique_values (
    tenant_id uuid NOT NULL,
    meter_key text NOT NULL,
    window_size text NOT NULL,
    window_start bigint NOT NULL,
    group_key text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (tenant_id, meter_key, window_size, window_start, group_key, value)
);

CREATE TABLE usage_quotas (
    tenant_id uuid NOT NULL,
    meter_key text NOT NULL,
    period text NOT NULL,
    quota_limit text NOT NULL,
    mode text NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, meter_key)
);

CREATE TABLE usage_quota_counters (
    tenant_id uuid NOT NULL,
    meter_key text NOT NULL,
    period_start bigint NOT NULL,
    used bigint NOT NULL,
    PRIMARY KEY (tenant_id, meter_key, period_start)
);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['usage_meters', 'usage_events', 'usage_rollups',
                             'usage_unique_values', 'usage_quotas', 'usage_quota_counters']
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
