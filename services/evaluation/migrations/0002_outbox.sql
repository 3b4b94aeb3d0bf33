-- Every per-row and summary result goes to `tessera.eval.results` through the shared outbox
-- (services/common/outbox.py), written in the transaction that stores the result: its table,
-- as Outbox("outbox").create_table_sql() writes it.
CREATE TABLE IF NOT EXISTS outbox (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    key text NOT NULL,
    payload bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    traceparent text
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
