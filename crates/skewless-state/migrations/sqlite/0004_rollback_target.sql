-- Where a rollback from each release goes: the release that was current when
-- it was last promoted. Filled for existing releases from their history.
ALTER TABLE releases ADD COLUMN rollback_to TEXT;
UPDATE releases SET rollback_to = (
    SELECT h.before FROM history h
    WHERE h.action = 'promote' AND h.after = releases.id
      AND h.before IS NOT NULL AND h.before != releases.id
    ORDER BY h.seq DESC LIMIT 1
);
