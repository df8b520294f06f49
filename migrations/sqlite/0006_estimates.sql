-- Progress a person can read: the rate of a COPY in progress (a moving average, in thousandths
-- per second) on each PVC record and on the job (the sum of its records); once a job is
-- terminal, how long it ran (s) and its average rate (bytes per second). The rounded rates and
-- the ETAs are computed when read (no columns).
ALTER TABLE pvc_progress ADD COLUMN rate_bytes_milli INTEGER;
ALTER TABLE pvc_progress ADD COLUMN rate_files_milli INTEGER;
ALTER TABLE jobs ADD COLUMN rate_bytes_milli INTEGER;
ALTER TABLE jobs ADD COLUMN rate_files_milli INTEGER;
ALTER TABLE jobs ADD COLUMN duration_seconds INTEGER;
ALTER TABLE jobs ADD COLUMN average_bytes_per_second INTEGER;
