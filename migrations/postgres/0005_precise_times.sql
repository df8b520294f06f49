-- Times a person can read: when each activity line of a job came (µs, a JSON array aligned with
-- the end of `activity`; jobs from before have none), and when the server first saw each PVC
-- record ACTIVE and final (µs), for a duration finer than the documented integer seconds of
-- `start_time` and `end_time`.
ALTER TABLE jobs ADD COLUMN activity_times TEXT NOT NULL DEFAULT '[]';
ALTER TABLE pvc_progress ADD COLUMN active_time BIGINT;
ALTER TABLE pvc_progress ADD COLUMN finish_time BIGINT;
