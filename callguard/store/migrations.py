"""Numbered schema migrations. ``PRAGMA user_version`` holds the last one applied.

Append only: never edit a migration that has shipped; add the next number. Each runs in one transaction.
"""

from __future__ import annotations

MIGRATIONS: dict[int, str] = {
    1: """
    -- CRM contacts' phones. A contact with three phones gives three rows; two contacts may share a phone
    -- (CRM duplicates), hence the pair key (DESIGN.md has phone alone: one phone can belong to two contacts).
    CREATE TABLE numbers (
        phone       TEXT NOT NULL,            -- E.164
        contact_id  TEXT NOT NULL,
        name        TEXT NOT NULL DEFAULT '',
        owner       TEXT NOT NULL DEFAULT '',
        spam        INTEGER NOT NULL DEFAULT 0,
        source      TEXT NOT NULL,            -- amocrm | bitrix24
        updated_at  REAL NOT NULL,
        PRIMARY KEY (phone, contact_id)
    ) WITHOUT ROWID;
    CREATE INDEX numbers_contact ON numbers(contact_id);

    -- Local allow/block lists (callguard import, callguard check); beat CRM flags.
    CREATE TABLE overrides (
        phone       TEXT PRIMARY KEY,
        action      TEXT NOT NULL CHECK (action IN ('allow', 'block')),
        note        TEXT NOT NULL DEFAULT '',
        created_at  REAL NOT NULL
    ) WITHOUT ROWID;

    -- One row per FastAGI screen, written after the answer (never on the call path).
    CREATE TABLE screens (
        uniqueid    TEXT NOT NULL,
        at          REAL NOT NULL,
        caller      TEXT NOT NULL,
        did         TEXT NOT NULL,
        verdict     TEXT NOT NULL,
        reason      TEXT NOT NULL,
        latency_ms  REAL NOT NULL
    );
    CREATE INDEX screens_at ON screens(at);
    CREATE INDEX screens_uniqueid ON screens(uniqueid);

    -- Every finished call the tracker saw.
    CREATE TABLE calls (
        linkedid    TEXT PRIMARY KEY,
        uniqueid    TEXT NOT NULL DEFAULT '',
        caller      TEXT NOT NULL,
        did         TEXT NOT NULL,
        verdict     TEXT NOT NULL DEFAULT '',
        outcome     TEXT NOT NULL,
        reason      TEXT NOT NULL DEFAULT '',
        started_at  REAL NOT NULL,
        ended_at    REAL NOT NULL,
        wait_s      REAL NOT NULL DEFAULT 0
    );
    CREATE INDEX calls_ended ON calls(ended_at);

    -- Durable delivery of missed calls; idempotency key = Linkedid.
    CREATE TABLE outbox (
        linkedid    TEXT PRIMARY KEY,
        payload     TEXT NOT NULL,            -- JSON
        state       TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sending', 'sent', 'dead')),
        attempts    INTEGER NOT NULL DEFAULT 0,
        next_at     REAL NOT NULL,
        last_error  TEXT NOT NULL DEFAULT '',
        crm_ref     TEXT NOT NULL DEFAULT '',
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    );
    CREATE INDEX outbox_due ON outbox(state, next_at);

    -- The open lead per caller, for repeat misses inside missed.dedupe_window.
    CREATE TABLE leads (
        phone       TEXT NOT NULL,
        sink        TEXT NOT NULL,
        crm_ref     TEXT NOT NULL,
        opened_at   REAL NOT NULL,
        last_at     REAL NOT NULL,
        misses      INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (phone, sink)
    );

    -- Where the CRM sync stands.
    CREATE TABLE sync_state (
        crm          TEXT PRIMARY KEY,
        cursor       TEXT NOT NULL DEFAULT '',
        last_sync_at REAL NOT NULL DEFAULT 0,
        last_full_at REAL NOT NULL DEFAULT 0,
        full_started_at REAL NOT NULL DEFAULT 0,
        full_page    TEXT NOT NULL DEFAULT ''   -- resume point of an unfinished full sync
    );
    """,
    3: """
    -- CRM credentials that rotate (amoCRM OAuth: a new refresh token on every refresh, crm-apis.md §1.1);
    -- the newest pair must survive a restart or the integration is locked out.
    CREATE TABLE crm_tokens (
        crm           TEXT PRIMARY KEY,
        access_token  TEXT NOT NULL,
        refresh_token TEXT NOT NULL,
        updated_at    REAL NOT NULL
    );
    """,
    4: """
    -- Nothing reads screens by uniqueid but a test's verdict_of(); the index cost every screen's record
    -- ~3 µs more of the writer's time (~16 against ~13 µs a row).
    DROP INDEX IF EXISTS screens_uniqueid;
    """,
    5: """
    -- The call-back loop: one row per call-back, written before each step's actions run.
    CREATE TABLE callbacks (
        key              TEXT PRIMARY KEY,           -- Linkedid of the miss that opened it
        customer         TEXT NOT NULL,              -- E.164
        did              TEXT NOT NULL DEFAULT '',
        lead_ref         TEXT NOT NULL DEFAULT '',   -- the CRM lead (the outbox item's crm_ref)
        state            TEXT NOT NULL,
        manager          TEXT NOT NULL DEFAULT '',
        by_manager       TEXT NOT NULL DEFAULT '',
        missed_at        REAL NOT NULL,
        due              REAL,
        handoffs         INTEGER NOT NULL DEFAULT 0,
        attempts         INTEGER NOT NULL DEFAULT 0,
        first_attempt_at REAL,
        first_talk_at    REAL,
        closed_at        REAL,
        reason           TEXT NOT NULL DEFAULT '',
        data             TEXT NOT NULL,              -- Callback.to_row() as JSON
        pending          TEXT NOT NULL DEFAULT '[]', -- the CRM actions persisted, not yet carried out
        opened_at        REAL NOT NULL,
        updated_at       REAL NOT NULL
    );
    CREATE INDEX callbacks_missed ON callbacks(missed_at);
    CREATE INDEX callbacks_state ON callbacks(state);

    -- Delivered leads (the outbox linkedid) the loop has taken in, and the call-back each went to.
    CREATE TABLE callback_leads (
        linkedid  TEXT PRIMARY KEY,
        callback  TEXT NOT NULL,
        at        REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    6: """
    -- When each manager was last given a call-back ("least recently assigned"): a restart picks
    -- as the running service would have.
    CREATE TABLE callback_managers (
        name              TEXT PRIMARY KEY,
        last_assigned_at  REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    7: """
    -- The call-back intake asks every poll (1 s) for the leads delivered since its cursor
    -- (Callbacks.delivered_leads: state = 'sent' AND updated_at >= ?). Sent rows are kept for good, so
    -- through outbox_due (state, next_at) that read walked every lead ever sent, each second: ~1 ms of
    -- CPU per 1,000 sent leads (scripts/bench_callbacks.py). On (state, updated_at) it reads only the
    -- rows past the cursor, already in order.
    CREATE INDEX outbox_sent ON outbox(state, updated_at);
    """,
}

LATEST = max(MIGRATIONS)
