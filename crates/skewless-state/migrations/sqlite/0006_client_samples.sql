-- Live clients per release over time, as the dashboard plots them: one row
-- per release and sampling slot (a later write to the same slot replaces
-- it), kept to a bounded ring per release by the writer.
CREATE TABLE client_samples (
    release TEXT    NOT NULL,
    at      INTEGER NOT NULL,
    clients INTEGER NOT NULL,
    PRIMARY KEY (release, at)
) WITHOUT ROWID;

CREATE INDEX client_samples_at ON client_samples (at);
