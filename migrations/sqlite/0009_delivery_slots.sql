-- How many attempts of each subscription were ever recorded: attempt n goes to slot n % 100 of
-- its ring in `deliveries`, so the ring holds exactly the newest 100 across restarts and
-- replicas.
ALTER TABLE subscriptions ADD COLUMN attempts_made INTEGER NOT NULL DEFAULT 0;
