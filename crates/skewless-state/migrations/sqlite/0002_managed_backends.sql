-- A release may bind a managed back end: a command skewless runs, and the
-- path of its health check.
ALTER TABLE releases ADD COLUMN backend_cmd TEXT;
ALTER TABLE releases ADD COLUMN health_path TEXT;
