-- Jobs and PVC progress records. Enums are stored as their documented strings, times as unix
-- seconds (start_time, end_time) or microseconds (created, updated). A NULL is a field never set.

CREATE TABLE jobs (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT,
    message TEXT,
    type TEXT,
    state TEXT NOT NULL,
    start_time INTEGER,
    end_time INTEGER,
    num_total_resources INTEGER,
    num_backup_resources INTEGER,
    cluster TEXT,
    cluster_name TEXT,
    backupdef TEXT,
    backupdef_name TEXT,
    restoredef_name TEXT,
    securityscan_name TEXT,
    -- JSON array of strings, append-only.
    activity TEXT NOT NULL DEFAULT '[]',
    -- kube_copy_progress, derived from the PVC records; NULL while the job has no COPY record.
    cp_total_pvs INTEGER,
    cp_pending_pvs INTEGER,
    cp_active_pvs INTEGER,
    cp_completed_pvs INTEGER,
    cp_failed_pvs INTEGER,
    cp_estimated_size INTEGER,
    cp_estimated_number_of_files INTEGER,
    cp_io_size INTEGER,
    cp_io_number_of_files INTEGER,
    cp_transferred_size INTEGER,
    cp_transferred_number_of_files INTEGER,
    -- kube_snapshot_progress, derived; NULL while the job has no K8S_SNAP record.
    sp_total_pvs INTEGER,
    sp_pending_pvs INTEGER,
    sp_active_pvs INTEGER,
    sp_completed_pvs INTEGER,
    sp_failed_pvs INTEGER,
    sp_skipped_pvs INTEGER,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    etag TEXT NOT NULL
);

-- The filters and orders a dashboard uses: by state, type, cluster or backup definition, newest
-- first; by creation time; by start time.
CREATE INDEX jobs_state_created ON jobs (state, created, id);
CREATE INDEX jobs_type_created ON jobs (type, created, id);
CREATE INDEX jobs_cluster_created ON jobs (cluster, created, id);
CREATE INDEX jobs_backupdef_created ON jobs (backupdef, created, id);
CREATE INDEX jobs_created ON jobs (created, id);
CREATE INDEX jobs_start_time ON jobs (start_time, id);

CREATE TABLE pvc_progress (
    id TEXT PRIMARY KEY NOT NULL,
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    start_time INTEGER,
    end_time INTEGER,
    message TEXT,
    op_type TEXT,
    snapshot_progress_percentage INTEGER,
    estimated_size INTEGER,
    estimated_number_of_files INTEGER,
    io_size INTEGER,
    io_number_of_files INTEGER,
    transferred_size INTEGER,
    transferred_number_of_files INTEGER,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    etag TEXT NOT NULL
);

-- A PVC record is identified by (job_id, namespace, name): reporting it again updates it.
CREATE UNIQUE INDEX pvc_progress_key ON pvc_progress (job_id, namespace, name);
CREATE INDEX pvc_progress_job_created ON pvc_progress (job_id, created, id);
