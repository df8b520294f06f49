-- Lists filtered by state, type, cluster or backup definition in the default order (creation
-- order, `_id` ascending), as REST clients ask when they send a `where` without a `sort`: without
-- these, SQLite reads every match to sort it (150 ms for 200,000 RUNNING jobs of a million).
-- Only creates, deletes and changes of these columns maintain them; progress updates do not.
CREATE INDEX jobs_state_id ON jobs (state, id);
CREATE INDEX jobs_type_id ON jobs (type, id);
CREATE INDEX jobs_cluster_id ON jobs (cluster, id);
CREATE INDEX jobs_backupdef_id ON jobs (backupdef, id);
