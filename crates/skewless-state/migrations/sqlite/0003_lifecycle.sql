-- When a release stopped being current (its drain started), and the canary:
-- a second release that a share of new sessions gets.
ALTER TABLE releases ADD COLUMN drained_at INTEGER;
ALTER TABLE pointer ADD COLUMN canary TEXT;
ALTER TABLE pointer ADD COLUMN canary_percent INTEGER NOT NULL DEFAULT 0;
