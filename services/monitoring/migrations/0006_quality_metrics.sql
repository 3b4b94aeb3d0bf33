-- Quality metrics from the evaluation service (`tessera.eval.results` summary records), next to
-- drift: one row per (online evaluation or eval run, window end, metric). The first record of a
-- key wins, so a redelivered or replayed summary changes nothing.
CREATE TABLE IF NOT EXISTS quality_metrics (
    source_id text NOT NULL,          -- the online evaluation's id, or the eval run's
    window_end timestamptz NOT NULL,  -- an eval run's summary: when it was published
    metric text NOT NULL,
    kind text NOT NULL,               -- 'online' or 'run'
    eval_run_id text NOT NULL,
    endpoint text NOT NULL,
    window_start timestamptz,
    value double precision,           -- the window's mean; NULL when nothing was measured
    measured bigint NOT NULL,
    unmeasured bigint NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, window_end, metric)
);
CREATE INDEX IF NOT EXISTS quality_metrics_by_endpoint ON quality_metrics (endpoint, window_end DESC);
