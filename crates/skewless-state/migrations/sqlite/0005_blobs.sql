-- Every stored blob as garbage collection and registration see it: present,
-- or being deleted; when a deploy last touched it, in seconds and in the
-- order of the history (the newest history entry at the time). Registration
-- requires its blobs present in its own transaction; gc marks a blob
-- deleting in one transaction only when no live release uses it, before
-- deleting its bytes.
CREATE TABLE blobs (
    hash        TEXT    PRIMARY KEY,
    state       TEXT    NOT NULL CHECK (state IN ('present', 'deleting')),
    touched_at  INTEGER NOT NULL,
    touched_seq INTEGER NOT NULL
) WITHOUT ROWID;

-- Where each release's retirement stands in the history.
ALTER TABLE releases ADD COLUMN retired_seq INTEGER;
UPDATE releases SET retired_seq = (
    SELECT MAX(h.seq) FROM history h WHERE h.action = 'retire' AND h.release = releases.id
);
