-- Initial schema: calls, their lifecycle events, the delivery outbox, and small side tables.

CREATE TABLE calls (
    pbx_id            TEXT NOT NULL,
    call_id           TEXT NOT NULL,
    direction         TEXT,
    caller_number     TEXT,
    called_number     TEXT,
    agent_extension   TEXT,
    start_time        TEXT,     -- ISO 8601, UTC, with offset
    start_epoch       REAL,
    answer_time       TEXT,
    end_time          TEXT,
    ring_seconds      REAL,
    talk_seconds      REAL,
    disposition       TEXT,
    terminating_party TEXT,
    recording_file    TEXT,
    recording_url     TEXT,
    queue             TEXT,
    ended             INTEGER NOT NULL DEFAULT 0,
    remote_number     TEXT,     -- the outside party's number, as received
    remote_digits     TEXT,     -- digits only, for history matching
    call_json         TEXT NOT NULL,
    updated_at        REAL NOT NULL,
    PRIMARY KEY (pbx_id, call_id)
);
CREATE INDEX calls_remote ON calls(remote_digits, start_epoch);
CREATE INDEX calls_start ON calls(start_epoch);
-- open_calls() after a restart reads only the few calls still open.
CREATE INDEX calls_open ON calls(pbx_id) WHERE ended = 0;

CREATE TABLE call_events (
    id         INTEGER PRIMARY KEY,
    pbx_id     TEXT NOT NULL,
    call_id    TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    at         TEXT NOT NULL,
    event_json TEXT NOT NULL,
    UNIQUE (pbx_id, call_id, seq)
);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    event_row       INTEGER NOT NULL REFERENCES call_events(id),
    adapter         TEXT NOT NULL,
    pbx_id          TEXT NOT NULL,
    call_id         TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    state           TEXT NOT NULL DEFAULT 'pending',  -- pending | done | dead
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    claimed_until   REAL,
    last_error      TEXT,
    last_status     INTEGER,
    last_response   TEXT,
    created_at      REAL NOT NULL,
    delivered_at    REAL
);
-- Partial indexes: the claim query only ever looks at pending rows, and done rows are the
-- vast majority once the system has run for a while.
CREATE INDEX outbox_due ON outbox(next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX outbox_call_order ON outbox(adapter, pbx_id, call_id, seq) WHERE state = 'pending';
CREATE INDEX outbox_state ON outbox(state, adapter);

CREATE TABLE notes (
    id         INTEGER PRIMARY KEY,
    pbx_id     TEXT NOT NULL,
    call_id    TEXT,
    number     TEXT,
    extension  TEXT,
    status     TEXT,
    comments   TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX notes_call ON notes(pbx_id, call_id);

CREATE TABLE contacts (
    number_digits   TEXT PRIMARY KEY,
    number          TEXT NOT NULL,
    name            TEXT,
    company         TEXT,
    owner_extension TEXT,
    url             TEXT,
    updated_at      REAL NOT NULL
);

CREATE TABLE originates (
    id              TEXT PRIMARY KEY,
    agent_extension TEXT,
    number          TEXT,
    state           TEXT NOT NULL,
    reason          TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    request_json    TEXT
);

CREATE TABLE kv (
    key   TEXT PRIMARY KEY,
    value TEXT
);
