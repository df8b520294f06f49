-- jobtrack on Postgres: the same tables as on SQLite (one row layout for every backend, see
-- src/store/row.rs), plus the change log's positions, which Postgres assigns after commit.
-- Text compares byte-wise (COLLATE "C") whatever the database's locale, as SQLite and the
-- in-memory filters of watchers compare it. Times: unix seconds (start_time, end_time) or
-- microseconds (created, updated). A NULL is a field never set.

CREATE TABLE jobs (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C",
    message TEXT COLLATE "C",
    type TEXT COLLATE "C",
    state TEXT COLLATE "C" NOT NULL,
    start_time BIGINT,
    end_time BIGINT,
    num_total_resources BIGINT,
    num_backup_resources BIGINT,
    cluster TEXT COLLATE "C",
    cluster_name TEXT COLLATE "C",
    backupdef TEXT COLLATE "C",
    backupdef_name TEXT COLLATE "C",
    restoredef_name TEXT COLLATE "C",
    securityscan_name TEXT COLLATE "C",
    -- JSON array of strings, append-only.
    activity TEXT NOT NULL DEFAULT '[]',
    cp_total_pvs BIGINT,
    cp_pending_pvs BIGINT,
    cp_active_pvs BIGINT,
    cp_completed_pvs BIGINT,
    cp_failed_pvs BIGINT,
    cp_estimated_size BIGINT,
    cp_estimated_number_of_files BIGINT,
    cp_io_size BIGINT,
    cp_io_number_of_files BIGINT,
    cp_transferred_size BIGINT,
    cp_transferred_number_of_files BIGINT,
    sp_total_pvs BIGINT,
    sp_pending_pvs BIGINT,
    sp_active_pvs BIGINT,
    sp_completed_pvs BIGINT,
    sp_failed_pvs BIGINT,
    sp_skipped_pvs BIGINT,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    revision BIGINT NOT NULL,
    etag TEXT NOT NULL
);

-- The dashboard's and the documented clients' shapes: a filter newest first, or in creation order.
CREATE INDEX jobs_state_created ON jobs (state, created, id);
CREATE INDEX jobs_type_created ON jobs (type, created, id);
CREATE INDEX jobs_cluster_created ON jobs (cluster, created, id);
CREATE INDEX jobs_backupdef_created ON jobs (backupdef, created, id);
CREATE INDEX jobs_created ON jobs (created, id);
-- A missing start_time sorts first ascending, as everywhere in the query language.
CREATE INDEX jobs_start_time ON jobs (start_time NULLS FIRST, id);
CREATE INDEX jobs_state_id ON jobs (state, id);
CREATE INDEX jobs_type_id ON jobs (type, id);
CREATE INDEX jobs_cluster_id ON jobs (cluster, id);
CREATE INDEX jobs_backupdef_id ON jobs (backupdef, id);

CREATE TABLE pvc_progress (
    id TEXT COLLATE "C" PRIMARY KEY,
    job_id TEXT COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    namespace TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    state TEXT COLLATE "C" NOT NULL,
    start_time BIGINT,
    end_time BIGINT,
    message TEXT COLLATE "C",
    op_type TEXT COLLATE "C",
    snapshot_progress_percentage BIGINT,
    estimated_size BIGINT,
    estimated_number_of_files BIGINT,
    io_size BIGINT,
    io_number_of_files BIGINT,
    transferred_size BIGINT,
    transferred_number_of_files BIGINT,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    revision BIGINT NOT NULL,
    etag TEXT NOT NULL
);
CREATE UNIQUE INDEX pvc_progress_key ON pvc_progress (job_id, namespace, name);
CREATE INDEX pvc_progress_job_created ON pvc_progress (job_id, created, id);

-- The change log. Writers insert entries without a position (`pos` NULL) in the transaction of
-- the change; a sequencer (one at a time in the whole fleet, under the lock on
-- change_sequencer) numbers the committed ones it can see, in insertion order, after the last
-- position. Positions therefore follow the order in which changes became visible, leave no gaps,
-- and never go to a change that commits later than a higher one: transactions that commit out of
-- order simply get their positions when they are visible.
CREATE TABLE changes (
    id BIGSERIAL PRIMARY KEY,
    pos BIGINT UNIQUE,
    job_id TEXT COLLATE "C" NOT NULL,
    kind TEXT NOT NULL,
    at BIGINT NOT NULL,
    -- The change as LZ4-compressed JSON (the same encoding as on SQLite).
    change BYTEA NOT NULL
);
CREATE INDEX changes_unpositioned ON changes (id) WHERE pos IS NULL;
CREATE INDEX changes_job_pos ON changes (job_id, pos);

-- Holds no rows: LOCK TABLE on it serialises sequencers, and, unlike a SELECT, taking it does not
-- fix a transaction's snapshot, so a snapshot taken after it sees every change it numbered.
CREATE TABLE change_sequencer ();
