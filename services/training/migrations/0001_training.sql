-- Datasets (the registry holds their grants; rows live content-addressed under the training root).
CREATE TABLE IF NOT EXISTS datasets (
    full_name   text PRIMARY KEY,
    description text NOT NULL DEFAULT '',
    owner       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS dataset_versions (
    dataset    text NOT NULL REFERENCES datasets (full_name) ON DELETE CASCADE,
    version    text NOT NULL,
    format     text NOT NULL,
    row_count  bigint NOT NULL,
    size_bytes bigint NOT NULL,
    columns    jsonb NOT NULL,
    source     text NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset, version)
);

-- Jobs: the truth about each job; a worker holds one under a lease it renews by heartbeat.
CREATE TABLE IF NOT EXISTS jobs (
    job_id           text PRIMARY KEY,
    spec             jsonb NOT NULL,
    state            text NOT NULL,
    created_by       text NOT NULL,
    base_version     bigint NOT NULL DEFAULT 0,
    preflight        jsonb NOT NULL DEFAULT '{}',
    run_id           text NOT NULL DEFAULT '',
    error_message    text NOT NULL DEFAULT '',
    step             bigint NOT NULL DEFAULT 0,
    total_steps      bigint NOT NULL DEFAULT 0,
    checkpoint_step  bigint NOT NULL DEFAULT 0,
    checkpoint_path  text NOT NULL DEFAULT '',
    attempts         integer NOT NULL DEFAULT 0,
    worker           text NOT NULL DEFAULT '',
    lease_expires_at timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    model_name       text NOT NULL DEFAULT '',
    model_version    bigint NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS jobs_claimable ON jobs (created_at) WHERE state IN ('QUEUED', 'RUNNING');

CREATE TABLE IF NOT EXISTS job_events (
    seq        bigserial PRIMARY KEY,
    job_id     text NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    type       text NOT NULL,
    body       jsonb NOT NULL,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS job_events_by_job ON job_events (job_id, seq);
