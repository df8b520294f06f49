-- Jobs that look after themselves: retention of finished jobs, and executors that stop
-- reporting. Per-job overrides (NULL: the server's flags), the executor's last write (µs, moved
-- at most every twentieth of the job's stall-after), and the stall marks (µs).
ALTER TABLE jobs ADD COLUMN ttl_seconds_after_finished INTEGER;
ALTER TABLE jobs ADD COLUMN stall_after_seconds INTEGER;
ALTER TABLE jobs ADD COLUMN abandon_after_seconds INTEGER;
ALTER TABLE jobs ADD COLUMN last_report_time INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN stalled_since INTEGER;
ALTER TABLE jobs ADD COLUMN abandon_time INTEGER;
-- A finished job with its own TTL: end_time + ttl_seconds_after_finished (unix seconds), set
-- when it finishes (a plain column: Postgres estimates an expression index on no rows badly).
ALTER TABLE jobs ADD COLUMN ttl_expiry INTEGER;
UPDATE jobs SET last_report_time = updated;

-- The sweeps read one of these each; when nothing is due, a lookup. Their predicates are the
-- sweep queries' conditions word for word (src/store/db.rs, `Due::ALL`).
-- Finished jobs, by end time (server's retention) or by end time + their own TTL.
CREATE INDEX jobs_expire ON jobs (end_time)
    WHERE state NOT IN ('PENDING', 'RUNNING') AND ttl_seconds_after_finished IS NULL;
CREATE INDEX jobs_expire_own ON jobs (ttl_expiry) WHERE ttl_expiry IS NOT NULL;
-- Active jobs not stalled, by the executor's last write (server's stall-after, or their own).
CREATE INDEX jobs_stall ON jobs (last_report_time)
    WHERE state IN ('PENDING', 'RUNNING') AND stalled_since IS NULL AND stall_after_seconds IS NULL;
CREATE INDEX jobs_stall_own ON jobs ((last_report_time + stall_after_seconds * 1050000))
    WHERE state IN ('PENDING', 'RUNNING') AND stalled_since IS NULL AND stall_after_seconds > 0;
-- Stalled jobs, by when they are given up on.
CREATE INDEX jobs_abandon ON jobs (abandon_time) WHERE abandon_time IS NOT NULL;
