-- Releases, their files, the current pointer and the history of changes.
CREATE TABLE releases (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT   NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    state       TEXT   NOT NULL,
    backend     TEXT,
    backend_cmd TEXT,
    health_path TEXT,
    shell_hash  TEXT   NOT NULL,
    shell_size  BIGINT NOT NULL,
    shell_br    BIGINT,
    shell_gzip  BIGINT,
    promoted_at BIGINT,
    retired_at  BIGINT,
    drained_at  BIGINT,
    rollback_to TEXT,
    retired_seq BIGINT
);

CREATE TABLE files (
    release_seq  BIGINT NOT NULL REFERENCES releases(seq),
    path         TEXT   NOT NULL,
    hash         TEXT   NOT NULL,
    size         BIGINT NOT NULL,
    content_type TEXT   NOT NULL,
    br           BIGINT,
    gzip         BIGINT,
    PRIMARY KEY (release_seq, path)
);

CREATE INDEX files_by_hash ON files(hash);

CREATE TABLE pointer (
    one            INTEGER PRIMARY KEY CHECK (one = 1),
    current        TEXT,
    generation     BIGINT  NOT NULL,
    required_min   TEXT,
    changed_at     BIGINT  NOT NULL,
    canary         TEXT,
    canary_percent INTEGER NOT NULL DEFAULT 0
);

INSERT INTO pointer (one, current, generation, required_min, changed_at) VALUES (1, NULL, 0, NULL, 0);

CREATE TABLE history (
    seq     BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
    action  TEXT   NOT NULL,
    release TEXT,
    before  TEXT,
    after   TEXT,
    actor   TEXT   NOT NULL,
    detail  TEXT
);

-- Every stored blob as garbage collection and registration see it. Times
-- are the database's (unix seconds of now()), so the clocks of the nodes do
-- not matter; `touched_seq` is the cluster version when it was last
-- touched, ordered against `releases.retired_seq` (the version a
-- retirement committed). `touches` counts every touch: a collection marks a
-- blob deleting only if nobody touched it since the collection read it.
CREATE TABLE blobs (
    hash        TEXT   PRIMARY KEY,
    state       TEXT   NOT NULL CHECK (state IN ('present', 'deleting')),
    touched_at  BIGINT NOT NULL,
    touched_seq BIGINT NOT NULL DEFAULT 0,
    touches     BIGINT NOT NULL DEFAULT 0
);

-- Bumped by every transaction that changes what the gateways route; the new
-- value is sent with NOTIFY skewless.
CREATE TABLE cluster_version (
    one     INTEGER PRIMARY KEY CHECK (one = 1),
    version BIGINT  NOT NULL
);

INSERT INTO cluster_version (one, version) VALUES (1, 0);
