-- Webhook subscriptions. `cursor` is the change-log position up to which every wanted change has
-- been delivered; the change log keeps everything after the lowest cursor. The replica holding
-- `lease_owner` until `lease_until` (µs) is the only one that delivers the subscription.
CREATE TABLE subscriptions (
    id TEXT COLLATE "C" PRIMARY KEY,
    url TEXT NOT NULL,
    filter TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    created BIGINT NOT NULL,
    cursor BIGINT NOT NULL,
    status TEXT NOT NULL,
    failing_since BIGINT,
    last_error TEXT NOT NULL DEFAULT '',
    delivered BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0
);

-- The newest delivery attempts of each subscription: a ring of 100 slots per subscription.
CREATE TABLE deliveries (
    subscription_id TEXT COLLATE "C" NOT NULL,
    slot BIGINT NOT NULL,
    position BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    at BIGINT NOT NULL,
    job_id TEXT NOT NULL,
    type TEXT NOT NULL,
    status_code BIGINT NOT NULL,
    error TEXT NOT NULL,
    micros BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    PRIMARY KEY (subscription_id, slot)
);
CREATE INDEX deliveries_newest ON deliveries (subscription_id, at);
