-- Live clients per release over time, as the dashboard plots them: one row
-- per release and sampling slot (a later write to the same slot replaces
-- it), kept to a bounded ring per release by the writer. One node writes
-- at a time (the "samples" lease); every node reads the same series.
CREATE TABLE client_samples (
    release TEXT   NOT NULL,
    at      BIGINT NOT NULL,
    clients BIGINT NOT NULL,
    PRIMARY KEY (release, at)
);

CREATE INDEX client_samples_at ON client_samples (at);
