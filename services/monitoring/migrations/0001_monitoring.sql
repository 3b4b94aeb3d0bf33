-- The inference table: one row per request, partitioned by event day; idempotent on
-- (request_id, event_time): a redelivered record carries the same timestamp.
-- `record` keeps the payload log as sent (protobuf), the columns what queries filter on.
CREATE TABLE inference_records (
    request_id text NOT NULL,
    event_time timestamptz NOT NULL,
    endpoint text NOT NULL,
    served_model text NOT NULL,
    model_version text NOT NULL,
    source text NOT NULL,
    status text NOT NULL,
    latency_ms double precision NOT NULL,
    time_to_first_token_ms double precision NOT NULL,
    prompt_tokens bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    trace_id text NOT NULL,
    record bytea NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, event_time)
) PARTITION BY RANGE (event_time);

CREATE INDEX inference_records_endpoint_time ON inference_records (endpoint, event_time DESC);

CREATE TABLE monitors (
    monitor_id text PRIMARY KEY,
    endpoint text NOT NULL,
    spec jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Set once the baseline profiles are in `baseline_profiles`.
    baseline_ready boolean NOT NULL DEFAULT false
);

-- Profiles per monitor, window, slice and feature. A batch appends a partial profile
-- (no read-modify-write on the hot path); evaluating a window merges its partials into one.
CREATE TABLE window_profiles (
    monitor_id text NOT NULL REFERENCES monitors ON DELETE CASCADE,
    window_start timestamptz NOT NULL,
    slice text NOT NULL,
    feature text NOT NULL,
    seq bigserial,
    kind text NOT NULL,
    count bigint NOT NULL,
    nulls bigint NOT NULL,
    mean double precision NOT NULL,
    m2 double precision NOT NULL,
    min double precision NOT NULL,
    max double precision NOT NULL,
    bucket_keys integer[] NOT NULL,
    bucket_counts bigint[] NOT NULL,
    categories text[] NOT NULL,
    category_counts bigint[] NOT NULL,
    PRIMARY KEY (monitor_id, window_start, slice, feature, seq)
);

CREATE TABLE baseline_profiles (
    monitor_id text NOT NULL REFERENCES monitors ON DELETE CASCADE,
    slice text NOT NULL,
    feature text NOT NULL,
    kind text NOT NULL,
    count bigint NOT NULL,
    nulls bigint NOT NULL,
    mean double precision NOT NULL,
    m2 double precision NOT NULL,
    min double precision NOT NULL,
    max double precision NOT NULL,
    bucket_keys integer[] NOT NULL,
    bucket_counts bigint[] NOT NULL,
    categories text[] NOT NULL,
    category_counts bigint[] NOT NULL,
    PRIMARY KEY (monitor_id, slice, feature)
);

-- Windows that received records; `dirty` until evaluated (again, after late records).
CREATE TABLE windows (
    monitor_id text NOT NULL REFERENCES monitors ON DELETE CASCADE,
    window_start timestamptz NOT NULL,
    window_end timestamptz NOT NULL,
    count bigint NOT NULL DEFAULT 0,
    dirty boolean NOT NULL DEFAULT true,
    evaluated_at timestamptz,
    PRIMARY KEY (monitor_id, window_start)
);
CREATE INDEX windows_dirty ON windows (window_end) WHERE dirty;

CREATE TABLE drift_metrics (
    monitor_id text NOT NULL REFERENCES monitors ON DELETE CASCADE,
    window_start timestamptz NOT NULL,
    window_end timestamptz NOT NULL,
    slice text NOT NULL,
    feature text NOT NULL,
    statistic text NOT NULL,
    comparison text NOT NULL,
    value double precision NOT NULL,
    threshold double precision NOT NULL,
    drifted boolean NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (monitor_id, window_start, slice, feature, statistic, comparison)
);

-- The hysteresis state of every alarm.
CREATE TABLE drift_alarms (
    monitor_id text NOT NULL REFERENCES monitors ON DELETE CASCADE,
    slice text NOT NULL,
    feature text NOT NULL,
    statistic text NOT NULL,
    comparison text NOT NULL,
    active boolean NOT NULL,
    last_window_start timestamptz NOT NULL,
    PRIMARY KEY (monitor_id, slice, feature, statistic, comparison)
);

-- Outbox of drift events: written with the state change, published to Kafka after commit.
CREATE TABLE drift_events (
    seq bigserial PRIMARY KEY,
    event_id text NOT NULL UNIQUE,
    monitor_id text NOT NULL,
    event jsonb NOT NULL,
    published boolean NOT NULL DEFAULT false
);
CREATE INDEX drift_events_monitor ON drift_events (monitor_id, seq);
CREATE INDEX drift_events_unpublished ON drift_events (seq) WHERE NOT published;
