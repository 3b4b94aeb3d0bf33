-- The inference table becomes SQL-queryable: the request, response, labels and retrieved
-- context as JSONB beside the typed columns (like Databricks' inference tables), plus the
-- principal, error message and finish reason as text. `record` keeps the parsed payload log
-- as protobuf, whatever content type it arrived in.
ALTER TABLE inference_records
    ADD COLUMN principal text NOT NULL DEFAULT '',
    ADD COLUMN error_message text NOT NULL DEFAULT '',
    ADD COLUMN finish_reason text NOT NULL DEFAULT '',
    ADD COLUMN request jsonb,
    ADD COLUMN response jsonb,
    ADD COLUMN labels jsonb,
    ADD COLUMN retrieved_context jsonb;

-- One row per request id, whatever its timestamp: the first record wins, later ones are
-- duplicates. A partitioned table's unique key must include the partition key, hence this table;
-- retention deletes its rows with the partitions they point into.
CREATE TABLE inference_request_ids (
    request_id text PRIMARY KEY,
    event_time timestamptz NOT NULL
);
CREATE INDEX inference_request_ids_time ON inference_request_ids (event_time);
INSERT INTO inference_request_ids (request_id, event_time)
    SELECT DISTINCT ON (request_id) request_id, event_time FROM inference_records
    ORDER BY request_id, ingested_at, event_time
    ON CONFLICT DO NOTHING;

-- Rows written before this migration keep NULL JSON columns (SQL cannot parse their protobuf
-- `record`); those that arrived as JSON get theirs here. ListInferenceRecords reads both kinds.
UPDATE inference_records SET
    request = convert_from(record, 'UTF8')::jsonb -> 'inputs',
    response = convert_from(record, 'UTF8')::jsonb -> 'outputs',
    labels = convert_from(record, 'UTF8')::jsonb -> 'labels'
    WHERE get_byte(record, 0) = 123;  -- '{': protobuf never starts a PayloadLog with it
