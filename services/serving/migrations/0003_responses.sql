-- Stored answers of the OpenAI Responses API: the whole conversation up to and including the answer,
-- so previous_response_id works after a restart and on any replica. Only its principal may continue it.
CREATE TABLE IF NOT EXISTS responses (
    id          text PRIMARY KEY,
    endpoint    text NOT NULL,
    principal   text NOT NULL,
    messages    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
