-- Each outbox event keeps the trace of the change it announces (a drift event: the span linked
-- to its window's requests); the publisher sends it on.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS traceparent text;
