-- The change log: every committed change of a job or of one of its PVC records, in commit order.
-- `seq` is the position watchers resume from; it strictly increases without gaps. Rows older than
-- the retention are pruned (the newest row is always kept, so max(seq) is the head).
CREATE TABLE changes (
    seq INTEGER PRIMARY KEY NOT NULL,
    job_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    -- Commit time, microseconds since the epoch.
    at INTEGER NOT NULL,
    -- The change (the job after and before it, the changed PVC record) as LZ4-compressed JSON.
    change BLOB NOT NULL
);

-- A WatchJob that resumes or lags reads only its job's changes.
CREATE INDEX changes_job_seq ON changes (job_id, seq);
