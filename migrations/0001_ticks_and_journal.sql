-- The tutorial's table, unchanged, so its SQL runs as written.
CREATE TABLE IF NOT EXISTS ticks (
    time TIMESTAMPTZ NOT NULL,
    symbol TEXT NOT NULL,
    price DOUBLE PRECISION,
    volume DOUBLE PRECISION,
    PRIMARY KEY (time, symbol)
);

-- Per-symbol reads (API, admin list, candle recomputation) go newest first.
CREATE INDEX IF NOT EXISTS ticks_symbol_time ON ticks (symbol, time DESC);

-- The change journal: which (symbol, minute) each committed transaction touched.
-- Readers page through it by transaction visibility (xid8 + pg_snapshot), not by a serial
-- number, so a transaction that commits after a later-numbered one is never skipped.
CREATE TABLE candle_changes (
    xid XID8 NOT NULL DEFAULT pg_current_xact_id(),
    symbol TEXT,            -- NULL: everything changed (TRUNCATE)
    bucket TIMESTAMPTZ,
    changed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX candle_changes_xid ON candle_changes (xid);
CREATE INDEX candle_changes_changed_at ON candle_changes (changed_at);

-- Every write made through candlewick (API, admin pages, import), in the writing transaction.
CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor TEXT NOT NULL,        -- 'admin session', 'api token', 'cli import', 'demo feed'
    action TEXT NOT NULL,       -- 'insert', 'update', 'delete', 'import'
    symbol TEXT,
    tick_time TIMESTAMPTZ,
    rows BIGINT NOT NULL DEFAULT 1,
    before JSONB,
    after JSONB
);
CREATE INDEX audit_log_at ON audit_log (at DESC);
CREATE INDEX audit_log_symbol_at ON audit_log (symbol, at DESC);
