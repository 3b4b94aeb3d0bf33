-- Eval runs: the spec, progress and summaries; the caller's token is never stored (runs execute in
-- the process that accepted them, which renews `lease_expires_at` while it works).
CREATE TABLE IF NOT EXISTS runs (
    eval_run_id      text PRIMARY KEY,
    spec             jsonb NOT NULL,
    dataset          text NOT NULL,
    dataset_version  text NOT NULL DEFAULT '',
    target_endpoint  text NOT NULL,
    state            text NOT NULL,
    created_by       text NOT NULL,
    completed        bigint NOT NULL DEFAULT 0,
    total            bigint NOT NULL DEFAULT 0,
    failed           bigint NOT NULL DEFAULT 0,
    summary          jsonb NOT NULL DEFAULT '{}',
    manifest         jsonb NOT NULL DEFAULT '{}',
    calibrations     jsonb NOT NULL DEFAULT '[]',
    mlflow_run_id    text NOT NULL DEFAULT '',
    experiment_id    text NOT NULL DEFAULT '',
    error_message    text NOT NULL DEFAULT '',
    instance         text NOT NULL DEFAULT '',
    lease_expires_at timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX IF NOT EXISTS runs_newest ON runs (created_at DESC, eval_run_id DESC);
CREATE INDEX IF NOT EXISTS runs_live ON runs (lease_expires_at) WHERE state IN ('QUEUED', 'RUNNING');

-- Per-row results: one row per dataset row and repeat (a rerun of the same row overwrites it).
CREATE TABLE IF NOT EXISTS results (
    eval_run_id text NOT NULL REFERENCES runs (eval_run_id) ON DELETE CASCADE,
    row_number  integer NOT NULL,
    repeat      integer NOT NULL,
    result      jsonb NOT NULL,
    PRIMARY KEY (eval_run_id, row_number, repeat)
);

-- Human assessments: labels on logged requests and blind preference votes.
CREATE TABLE IF NOT EXISTS assessments (
    assessment_id text PRIMARY KEY,
    kind          text NOT NULL,
    endpoint      text NOT NULL DEFAULT '',
    request_id    text NOT NULL DEFAULT '',
    endpoint_a    text NOT NULL DEFAULT '',
    endpoint_b    text NOT NULL DEFAULT '',
    body          jsonb NOT NULL,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS assessments_by_request ON assessments (request_id) WHERE kind = 'LABEL';
CREATE INDEX IF NOT EXISTS assessments_newest ON assessments (created_at DESC, assessment_id DESC);

-- Online evaluations: a schedule per endpoint; one replica claims a due window at a time.
CREATE TABLE IF NOT EXISTS online_evaluations (
    online_evaluation_id text PRIMARY KEY,
    endpoint             text NOT NULL,
    body                 jsonb NOT NULL,
    created_by           text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    last_window_end      timestamptz,
    latest               jsonb NOT NULL DEFAULT '[]',
    claimed_until        timestamptz
);
