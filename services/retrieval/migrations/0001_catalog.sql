-- The catalog of vector indexes; each index's documents live in their own table (`table_name`).
CREATE TABLE IF NOT EXISTS indexes (
    name text PRIMARY KEY,
    table_name text NOT NULL UNIQUE,
    dimension integer NOT NULL CHECK (dimension > 0),
    metric text NOT NULL,
    m integer NOT NULL,
    ef_construction integer NOT NULL,
    metadata_schema jsonb NOT NULL DEFAULT '[]',
    embedding_model text NOT NULL DEFAULT '',
    text_columns text[] NOT NULL DEFAULT '{}',
    build_state text NOT NULL,
    owner text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_recall double precision NOT NULL DEFAULT 0
);

-- Where each source-table connector has read up to, so a restart resumes instead of re-reading.
CREATE TABLE IF NOT EXISTS connector_state (
    connector text PRIMARY KEY,
    watermark timestamptz,
    last_id text NOT NULL DEFAULT '',
    deletes_watermark bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
