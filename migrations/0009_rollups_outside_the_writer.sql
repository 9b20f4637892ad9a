-- Plain flavour: the hour and day rollups leave the writing transaction.
--
-- 0008 kept `candlewick_hour_candles` / `candlewick_day_candles` by statement triggers on the
-- minute table, inside the writer's transaction: every writer of one symbol's hour (and day)
-- upserted the same rollup row and so waited for the previous one to commit, and a one-row
-- INSERT into `ticks` cost about seven times what it did before (BENCHMARKS.md, "Feed:
-- one-row INSERTs").
--
-- Now a writer only does what it did before 0008: it merges into its minute and journals the
-- minute in `candle_changes` (migrations 0001, 0004). The journal is the record of which hours
-- and days changed; nothing more is written in the writer's transaction. The hour and day rows
-- are folded from the minutes afterwards by `candlewick_fold_rollups()` (the server's poller
-- runs it every poll, a bulk load before it reports done), which remembers in
-- `candlewick_rollup_state.folded_from` the transaction horizon it has folded up to: every
-- transaction with a lower id had ended before the fold read the minutes, so its changes are
-- in the stored rows. The journal entries of transactions at or above that horizon name the
-- hours still *pending*.
--
-- Reads stay exact once a write has committed: `one_hour_candle` is the stored hours but the
-- pending ones, plus the pending hours folded from their (at most 60) minutes at read time;
-- `one_day_candle` likewise, a pending day folded from its (at most 1,440) minutes. The poller
-- folds every second, so the pending set is the last second or so of writes. The stored rows
-- and the horizon are written by one transaction, so a reader sees both or neither.
--
-- Why the journal rather than a dirty-bucket table written by the trigger: the journal row is
-- written already, so a one-row INSERT costs exactly what it cost before 0008, and writers of
-- one hot symbol share no row but their minute's (as before 0008).
--
-- Folds run one at a time (a transaction-level advisory lock), so a fold never writes rows
-- computed from an older snapshot over those of a later fold. TRUNCATE of `ticks` (which empties
-- the minutes without journaling each) empties the hour and day tables in its transaction; a
-- fold first takes `ticks` and then `candle_changes` in ACCESS SHARE mode, the order the poll
-- takes them in, so a fold and a TRUNCATE (`TRUNCATE ticks, candle_changes` too) run one after
-- the other and never deadlock.
--
-- Journal pruning (`candlewick_prune_journal`) folds first and never drops an entry at or
-- above the fold's horizon: a pending hour stays pending until a fold has taken it in.
--
-- TimescaleDB: nothing changes (hierarchical continuous aggregates, 0008); the fold is a no-op.

CREATE TABLE candlewick_rollup_state (
    only_row BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    folded_from XID8 NOT NULL
);
-- 0008's triggers kept the rollups exact up to this migration; entries from here on pending.
INSERT INTO candlewick_rollup_state (folded_from)
VALUES (pg_snapshot_xmin(pg_current_snapshot()));

-- The advisory lock key of folds.
CREATE FUNCTION candlewick_rollup_lock_key() RETURNS BIGINT
LANGUAGE sql IMMUTABLE AS $$ SELECT 7356891440417238001::bigint $$;

-- The (symbol, hour) of every minute changed by a transaction at or above the fold's horizon,
-- i.e. the hours whose stored row may be stale. PL/pgSQL so that the planner takes it as
-- a handful of rows (it is: about a second of writes) and hashes it once per query rather
-- than inlining a scan whose size it would guess from the whole journal.
--
-- Always through the journal's xid index (`enable_seqscan = off` for this function): without
-- statistics on the journal, or for a horizon it does not know, PostgreSQL guesses that a
-- third of the journal is at or above the horizon and reads all of it. An import leaves a
-- journal row per loaded minute (5.8 million for three years and 99 symbols' month), and
-- every hour or day page paid half a second for that guess.
CREATE FUNCTION candlewick_pending_hours()
RETURNS TABLE (symbol TEXT, bucket TIMESTAMPTZ)
LANGUAGE plpgsql STABLE ROWS 10 SET enable_seqscan = off AS $fn$
BEGIN
    RETURN QUERY
        SELECT DISTINCT c.symbol, date_bin('1 hour', c.bucket, 'epoch')
        FROM candle_changes c
        WHERE c.xid >= (SELECT s.folded_from FROM candlewick_rollup_state s)
          AND c.symbol IS NOT NULL
          AND c.bucket IS NOT NULL;
END
$fn$;

CREATE FUNCTION candlewick_pending_days()
RETURNS TABLE (symbol TEXT, bucket TIMESTAMPTZ)
LANGUAGE plpgsql STABLE ROWS 5 AS $fn$
BEGIN
    RETURN QUERY
        SELECT DISTINCT p.symbol, date_bin('24 hours', p.bucket, 'epoch')
        FROM candlewick_pending_hours() p;
END
$fn$;

-- Folds every pending hour (and day) into the stored rows and moves the horizon; returns how
-- many hours it folded. Run it outside long transactions (under READ COMMITTED each statement
-- here sees what committed before it).
--
-- Its read of the journal goes through the xid index, as `candlewick_pending_hours()`'s: run
-- every poll, a guessed full scan of a large journal cost each poll as much.
CREATE FUNCTION candlewick_fold_rollups() RETURNS BIGINT
LANGUAGE plpgsql SET enable_seqscan = off AS $fn$
DECLARE
    since XID8;
    upto XID8;
    symbols TEXT[];
    buckets TIMESTAMPTZ[];
    day_symbols TEXT[];
    day_buckets TIMESTAMPTZ[];
BEGIN
    IF NOT EXISTS (SELECT FROM candlewick_meta WHERE key = 'flavour' AND value = 'postgresql') THEN
        RETURN 0;
    END IF;
    LOCK TABLE ticks IN ACCESS SHARE MODE;
    LOCK TABLE candle_changes IN ACCESS SHARE MODE;
    PERFORM pg_advisory_xact_lock(candlewick_rollup_lock_key());
    SELECT folded_from INTO since FROM candlewick_rollup_state;
    -- Every transaction below `upto` has ended now: the statements below see its minutes.
    upto := pg_snapshot_xmin(pg_current_snapshot());
    SELECT array_agg(k.symbol ORDER BY k.symbol, k.bucket), array_agg(k.bucket ORDER BY k.symbol, k.bucket)
    INTO symbols, buckets
    FROM (
        SELECT DISTINCT c.symbol, date_bin('1 hour', c.bucket, 'epoch') AS bucket
        FROM candle_changes c
        WHERE c.xid >= since
          AND c.symbol IS NOT NULL
          AND c.bucket IS NOT NULL
    ) AS k;
    IF symbols IS NOT NULL THEN
        DELETE FROM candlewick_hour_candles h
        USING unnest(symbols, buckets) AS k(symbol, bucket)
        WHERE h.symbol = k.symbol AND h.bucket = k.bucket;
        -- One index range scan per hour (LATERAL): as a join, the planner hashes on the
        -- symbol alone and compares every pending hour of a symbol with all its minutes.
        INSERT INTO candlewick_hour_candles
            (bucket, symbol, open, high, low, close, volume, trades, open_time, close_time)
        SELECT k.bucket, k.symbol, a.open, a.high, a.low, a.close, a.volume, a.trades,
               a.open_time, a.close_time
        FROM unnest(symbols, buckets) AS k(symbol, bucket)
        CROSS JOIN LATERAL (
            SELECT
                (array_agg(f.open ORDER BY f.open_time))[1] AS open,
                max(f.high) AS high,
                min(f.low) AS low,
                (array_agg(f.close ORDER BY f.close_time DESC))[1] AS close,
                sum(f.volume) AS volume,
                sum(f.trades)::bigint AS trades,
                min(f.open_time) AS open_time,
                max(f.close_time) AS close_time
            FROM candlewick_candles f
            WHERE f.symbol = k.symbol
              AND f.bucket >= k.bucket
              AND f.bucket < k.bucket + INTERVAL '1 hour'
        ) AS a
        WHERE a.trades IS NOT NULL;

        SELECT array_agg(d.symbol ORDER BY d.symbol, d.bucket), array_agg(d.bucket ORDER BY d.symbol, d.bucket)
        INTO day_symbols, day_buckets
        FROM (
            SELECT DISTINCT k.symbol, date_bin('24 hours', k.bucket, 'epoch') AS bucket
            FROM unnest(symbols, buckets) AS k(symbol, bucket)
        ) AS d;
        DELETE FROM candlewick_day_candles h
        USING unnest(day_symbols, day_buckets) AS k(symbol, bucket)
        WHERE h.symbol = k.symbol AND h.bucket = k.bucket;
        INSERT INTO candlewick_day_candles
            (bucket, symbol, open, high, low, close, volume, trades, open_time, close_time)
        SELECT k.bucket, k.symbol, a.open, a.high, a.low, a.close, a.volume, a.trades,
               a.open_time, a.close_time
        FROM unnest(day_symbols, day_buckets) AS k(symbol, bucket)
        CROSS JOIN LATERAL (
            SELECT
                (array_agg(f.open ORDER BY f.open_time))[1] AS open,
                max(f.high) AS high,
                min(f.low) AS low,
                (array_agg(f.close ORDER BY f.close_time DESC))[1] AS close,
                sum(f.volume) AS volume,
                sum(f.trades)::bigint AS trades,
                min(f.open_time) AS open_time,
                max(f.close_time) AS close_time
            FROM candlewick_hour_candles f
            WHERE f.symbol = k.symbol
              AND f.bucket >= k.bucket
              AND f.bucket < k.bucket + INTERVAL '24 hours'
        ) AS a
        WHERE a.trades IS NOT NULL;
    END IF;
    UPDATE candlewick_rollup_state SET folded_from = upto;
    RETURN coalesce(cardinality(symbols), 0);
END
$fn$;

-- TRUNCATE of `ticks` deletes every minute without journaling them one by one: the rollups
-- are emptied with them, in the same transaction (which holds `ticks` exclusively: no fold
-- runs meanwhile).
CREATE FUNCTION candlewick_truncate_rollups() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM candlewick_hour_candles;
    DELETE FROM candlewick_day_candles;
    RETURN NULL;
END
$fn$;

-- Folds, and never prunes what the fold has not taken in (see above); otherwise as in 0004.
CREATE OR REPLACE FUNCTION candlewick_prune_journal(keep INTERVAL) RETURNS BIGINT
LANGUAGE plpgsql AS $fn$
DECLARE
    horizon XID8;
    folded XID8;
    pruned BIGINT;
BEGIN
    INSERT INTO candle_changes_marks (oldest_running) VALUES (pg_snapshot_xmin(pg_current_snapshot()));
    SELECT oldest_running INTO horizon
    FROM candle_changes_marks
    WHERE at < clock_timestamp() - keep
    ORDER BY at DESC
    LIMIT 1;
    IF horizon IS NULL THEN
        RETURN 0;
    END IF;
    IF EXISTS (SELECT FROM candlewick_meta WHERE key = 'flavour' AND value = 'postgresql') THEN
        PERFORM candlewick_fold_rollups();
        SELECT folded_from INTO folded FROM candlewick_rollup_state;
        IF folded IS NOT NULL AND folded < horizon THEN
            horizon := folded;
        END IF;
    END IF;
    DELETE FROM candle_changes WHERE xid < horizon;
    GET DIAGNOSTICS pruned = ROW_COUNT;
    -- Older marks than the one used are of no further use.
    DELETE FROM candle_changes_marks WHERE oldest_running < horizon;
    RETURN pruned;
END
$fn$;

DO $flavour$
BEGIN
    IF EXISTS (SELECT FROM candlewick_meta WHERE key = 'flavour' AND value = 'postgresql') THEN
        DROP TRIGGER candles_rollup_insert ON candlewick_candles;
        DROP TRIGGER candles_rollup_update ON candlewick_candles;
        DROP TRIGGER candles_rollup_delete ON candlewick_candles;
        DROP TRIGGER candles_rollup_truncate ON candlewick_candles;
        DROP TRIGGER hours_rollup_insert ON candlewick_hour_candles;
        DROP TRIGGER hours_rollup_update ON candlewick_hour_candles;
        DROP TRIGGER hours_rollup_delete ON candlewick_hour_candles;
        DROP TRIGGER hours_rollup_truncate ON candlewick_hour_candles;

        CREATE TRIGGER ticks_truncate_rollups AFTER TRUNCATE ON ticks
            FOR EACH STATEMENT EXECUTE FUNCTION candlewick_truncate_rollups();

        -- Each pending hour (of `candlewick_pending_hours()`) folded from its minutes; a
        -- pending hour with no minute left has no row. PL/pgSQL, as the pending sets: the
        -- planner takes the result as the handful of rows it is.
        CREATE FUNCTION candlewick_pending_hour_candles()
        RETURNS TABLE (bucket TIMESTAMPTZ, symbol TEXT, open DOUBLE PRECISION,
                       high DOUBLE PRECISION, low DOUBLE PRECISION, close DOUBLE PRECISION,
                       volume DOUBLE PRECISION, trades BIGINT)
        LANGUAGE plpgsql STABLE ROWS 10 AS $fn$
        BEGIN
            RETURN QUERY
                SELECT p.bucket, p.symbol, a.open, a.high, a.low, a.close, a.volume, a.trades
                FROM candlewick_pending_hours() p
                CROSS JOIN LATERAL (
                    SELECT
                        (array_agg(f.open ORDER BY f.open_time))[1] AS open,
                        max(f.high) AS high,
                        min(f.low) AS low,
                        (array_agg(f.close ORDER BY f.close_time DESC))[1] AS close,
                        sum(f.volume) AS volume,
                        sum(f.trades)::bigint AS trades
                    FROM candlewick_candles f
                    WHERE f.symbol = p.symbol
                      AND f.bucket >= p.bucket
                      AND f.bucket < p.bucket + INTERVAL '1 hour'
                ) AS a
                WHERE a.trades IS NOT NULL;
        END
        $fn$;

        CREATE FUNCTION candlewick_pending_day_candles()
        RETURNS TABLE (bucket TIMESTAMPTZ, symbol TEXT, open DOUBLE PRECISION,
                       high DOUBLE PRECISION, low DOUBLE PRECISION, close DOUBLE PRECISION,
                       volume DOUBLE PRECISION, trades BIGINT)
        LANGUAGE plpgsql STABLE ROWS 5 AS $fn$
        BEGIN
            RETURN QUERY
                SELECT p.bucket, p.symbol, a.open, a.high, a.low, a.close, a.volume, a.trades
                FROM candlewick_pending_days() p
                CROSS JOIN LATERAL (
                    SELECT
                        (array_agg(f.open ORDER BY f.open_time))[1] AS open,
                        max(f.high) AS high,
                        min(f.low) AS low,
                        (array_agg(f.close ORDER BY f.close_time DESC))[1] AS close,
                        sum(f.volume) AS volume,
                        sum(f.trades)::bigint AS trades
                    FROM candlewick_candles f
                    WHERE f.symbol = p.symbol
                      AND f.bucket >= p.bucket
                      AND f.bucket < p.bucket + INTERVAL '24 hours'
                ) AS a
                WHERE a.trades IS NOT NULL;
        END
        $fn$;

        -- Same names and columns as in 0008: the stored rows but the pending ones (`NOT IN` over
        -- the hashed pending set keeps the index order of the stored rows), and the pending
        -- buckets folded from their minutes. PostgreSQL does not read such a union in order, so
        -- the server reads the two halves apart (src/db/candles.rs); the views read the same.
        CREATE OR REPLACE VIEW one_hour_candle AS
            SELECT h.bucket, h.symbol, h.open, h.high, h.low, h.close, h.volume, h.trades
            FROM candlewick_hour_candles h
            WHERE (h.symbol, h.bucket) NOT IN (SELECT p.symbol, p.bucket FROM candlewick_pending_hours() p)
            UNION ALL
            SELECT c.bucket, c.symbol, c.open, c.high, c.low, c.close, c.volume, c.trades
            FROM candlewick_pending_hour_candles() c;
        CREATE OR REPLACE VIEW one_day_candle AS
            SELECT d.bucket, d.symbol, d.open, d.high, d.low, d.close, d.volume, d.trades
            FROM candlewick_day_candles d
            WHERE (d.symbol, d.bucket) NOT IN (SELECT p.symbol, p.bucket FROM candlewick_pending_days() p)
            UNION ALL
            SELECT c.bucket, c.symbol, c.open, c.high, c.low, c.close, c.volume, c.trades
            FROM candlewick_pending_day_candles() c;
    END IF;
END
$flavour$;

-- Both flavours: 0008's rollup trigger functions (created on both, called only by the plain
-- flavour's triggers dropped above) and the recomputations only they called.
DROP FUNCTION candlewick_rollup_hours();
DROP FUNCTION candlewick_rollup_days();
DROP FUNCTION candlewick_recompute_hours(TEXT[], TIMESTAMPTZ[]);
DROP FUNCTION candlewick_recompute_days(TEXT[], TIMESTAMPTZ[]);
