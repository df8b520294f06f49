-- Webhook subscriptions. `cursor` is the change-log position up to which every wanted change has
-- been delivered; the change log keeps everything after the lowest cursor. The replica holding
-- `lease_owner` until `lease_until` (µs) is the only one that delivers the subscription.
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY NOT NULL,
    url TEXT NOT NULL,
    filter TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    created INTEGER NOT NULL,
    cursor INTEGER NOT NULL,
    status TEXT NOT NULL,
    failing_since INTEGER,
    last_error TEXT NOT NULL DEFAULT '',
    delivered INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until INTEGER NOT NULL DEFAULT 0
);

-- The newest delivery attempts of each subscription: a ring of 100 slots per subscription.
CREATE TABLE deliveries (
    subscription_id TEXT NOT NULL,
    slot INTEGER NOT NULL,
    position INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    at INTEGER NOT NULL,
    job_id TEXT NOT NULL,
    type TEXT NOT NULL,
    status_code INTEGER NOT NULL,
    error TEXT NOT NULL,
    micros INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    PRIMARY KEY (subscription_id, slot)
);
CREATE INDEX deliveries_newest ON deliveries (subscription_id, at);
