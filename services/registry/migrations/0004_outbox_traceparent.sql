-- Each outbox event keeps the trace of the change it announces; the publisher sends it on.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS traceparent text;
