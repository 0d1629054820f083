-- Metering: meters, events (deduplicated on (tenant_id, id) forever), rollups per
-- (meter, window, group), unique-count sets, quotas and quota counters. Window starts
-- and quota periods are Unix seconds; decimal values are stored as text and added up
-- in Rust (SQLite's arithmetic is floating point).
CREATE TABLE usage_meters (
    tenant_id BLOB NOT NULL,
    meter_key TEXT NOT NULL,
    version INTEGER NOT NULL,
    definition TEXT NOT NULL,
    PRIMARY KEY (tenant_id, meter_key)
);

CREATE TABLE usage_events (
    tenant_id BLOB NOT NULL,
    id BLOB NOT NULL,
    event_type TEXT NOT NULL,
    source TEXT NOT NULL,
    subject TEXT NOT NULL,
    time TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
) WITHOUT ROWID;

CREATE TABLE usage_rollups (
    tenant_id BLOB NOT NULL,
    meter_key TEXT NOT NULL,
    window_size TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    group_key TEXT NOT NULL,
    events INTEGER NOT NULL,
    value TEXT NOT NULL,
    latest_time TEXT,
    latest_id BLOB,
    saturated BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (tenant_id, meter_key, window_size, window_start, group_key)
) WITHOUT ROWID;

CREATE TABLE usage_unique_values (
    tenant_id BLOB NOT NULL,
    meter_key TEXT NOT NULL,
    window_size TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    group_key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (tenant_id, meter_key, window_size, window_start, group_key, value)
) WITHOUT ROWID;

CREATE TABLE usage_quotas (
    tenant_id BLOB NOT NULL,
    meter_key TEXT NOT NULL,
    period TEXT NOT NULL,
    quota_limit TEXT NOT NULL,
    mode TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, meter_key)
);

CREATE TABLE usage_quota_counters (
    tenant_id BLOB NOT NULL,
    meter_key TEXT NOT NULL,
    period_start INTEGER NOT NULL,
    used INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, meter_key, period_start)
);
