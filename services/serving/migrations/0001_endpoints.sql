-- Serving endpoints: a name and its served models (model + version or alias + traffic share).
CREATE TABLE IF NOT EXISTS endpoints (
    name            text PRIMARY KEY,
    served_models   jsonb NOT NULL,
    max_concurrency integer NOT NULL DEFAULT 0,
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
