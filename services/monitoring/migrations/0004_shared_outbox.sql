-- Drift events go to Kafka through the shared outbox (services/common/outbox.py): its table,
-- as Outbox("outbox").create_table_sql() writes it.
CREATE TABLE IF NOT EXISTS outbox (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    key text NOT NULL,
    payload bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- drift_events stays the queryable record of events; new rows are written with `published` true.
-- The flag now only marks rows of the old per-service publisher not sent yet (written before this
-- migration, or by a replica still on the old code during a rollout): the evaluator hands those to
-- the outbox. Left as it was, so an old replica's rows stay visible to it and to the hand-over.
