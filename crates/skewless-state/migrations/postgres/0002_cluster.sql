-- The nodes of a cluster: each reports itself (heartbeat) and its live
-- clients per release; singleton jobs run under a lease with an expiry.
CREATE TABLE nodes (
    id         TEXT   PRIMARY KEY,
    heard_at   BIGINT NOT NULL,
    report     TEXT   NOT NULL
);

CREATE TABLE presence (
    node      TEXT   NOT NULL,
    release   TEXT   NOT NULL,
    streams   BIGINT NOT NULL,
    recent    BIGINT NOT NULL,
    total     BIGINT NOT NULL,
    last_seen BIGINT,
    PRIMARY KEY (node, release)
);

CREATE TABLE leases (
    name       TEXT   PRIMARY KEY,
    holder     TEXT   NOT NULL,
    epoch      BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
