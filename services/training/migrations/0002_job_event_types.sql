-- The latest event of one type of a job (its last progress, its last checkpoint) in one index probe:
-- the metrics endpoint reads both on every scrape.
CREATE INDEX IF NOT EXISTS job_events_by_job_type ON job_events (job_id, type, seq);
