-- Every stored blob as garbage collection and registration see it: present,
-- or being deleted; and when a deploy last touched it. Registration requires
-- its blobs present in its own transaction; gc marks a blob deleting in one
-- transaction only when no live release uses it, before deleting its bytes.
CREATE TABLE blobs (
    hash       TEXT    PRIMARY KEY,
    state      TEXT    NOT NULL CHECK (state IN ('present', 'deleting')),
    touched_at INTEGER NOT NULL
) WITHOUT ROWID;
