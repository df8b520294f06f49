-- API keys: only the SHA-256 of each key's secret is stored.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    hash TEXT NOT NULL,
    created INTEGER NOT NULL,
    revoked INTEGER
);
