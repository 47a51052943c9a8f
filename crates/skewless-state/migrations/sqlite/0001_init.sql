-- Releases, their files, the current pointer and the history of changes.
CREATE TABLE releases (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    state       TEXT    NOT NULL,
    backend     TEXT,
    shell_hash  TEXT    NOT NULL,
    shell_size  INTEGER NOT NULL,
    shell_br    INTEGER,
    shell_gzip  INTEGER,
    promoted_at INTEGER,
    retired_at  INTEGER
);

CREATE TABLE files (
    release_seq  INTEGER NOT NULL REFERENCES releases(seq),
    path         TEXT    NOT NULL,
    hash         TEXT    NOT NULL,
    size         INTEGER NOT NULL,
    content_type TEXT    NOT NULL,
    br           INTEGER,
    gzip         INTEGER,
    PRIMARY KEY (release_seq, path)
) WITHOUT ROWID;

CREATE INDEX files_by_hash ON files(hash);

CREATE TABLE pointer (
    one          INTEGER PRIMARY KEY CHECK (one = 1),
    current      TEXT,
    generation   INTEGER NOT NULL,
    required_min TEXT,
    changed_at   INTEGER NOT NULL
);

INSERT INTO pointer (one, current, generation, required_min, changed_at) VALUES (1, NULL, 0, NULL, 0);

CREATE TABLE history (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    action  TEXT    NOT NULL,
    release TEXT,
    before  TEXT,
    after   TEXT,
    actor   TEXT    NOT NULL,
    detail  TEXT
);
