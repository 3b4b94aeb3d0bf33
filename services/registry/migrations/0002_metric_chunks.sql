-- Metric points are stored per logged batch and key, as parallel arrays: one row
-- per key per LogBatch instead of one per point, so the hot path writes a handful
-- of rows whatever the batch size. History reads unnest them in (step, timestamp)
-- order through the (run, key, first_step) index.
DROP TABLE metrics;

CREATE TABLE metric_chunks (
    run_pk     bigint NOT NULL,
    key        text NOT NULL,
    first_step bigint NOT NULL,
    last_step  bigint NOT NULL,
    steps      bigint[] NOT NULL,
    vals       double precision[] NOT NULL,
    timestamps bigint[] NOT NULL
);
CREATE INDEX metric_chunks_history ON metric_chunks (run_pk, key, first_step);
