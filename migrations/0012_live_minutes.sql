-- A poll whose cost follows the changed minutes, not their ticks, on TimescaleDB too.
--
-- The continuous aggregate shows an edit to a materialized minute only after a refresh, so the
-- poll recomputed every changed minute from `ticks`: each poll read every tick already in each
-- changed minute (a hot symbol's minute holds tens of thousands), a cost that grew through the
-- minute. Here the TimescaleDB flavour keeps the recent minutes as the plain flavour keeps all
-- of them (`candlewick_candles`, migration 0004): an INSERT merges its usable ticks, aggregated
-- per minute, into `candlewick_live_minutes` in the writing transaction, commutatively (open
-- and close keep the time of their tick), and UPDATE and DELETE recompute their minutes. The
-- poll reads one row per changed minute there.
--
-- The table covers the minutes from `candlewick_meta.live_minutes_from` (Unix seconds) on: every usable tick
-- of such a minute went through the merge (or a recomputation), so a row is exact and a
-- missing row means no usable tick. Older minutes are recomputed by the poll as before. The
-- journal prune moves the start forward and drops the rows before it, so the table holds about
-- the journal's hour. The plain flavour is unchanged.

DO $flavour$
BEGIN
    IF NOT EXISTS (SELECT FROM candlewick_meta WHERE key = 'flavour' AND value = 'timescaledb') THEN
        RETURN;
    END IF;

    -- No writer may add ticks between the start chosen and the rows computed from `ticks`.
    LOCK TABLE ticks IN SHARE MODE;

    CREATE TABLE candlewick_live_minutes (
        bucket TIMESTAMPTZ NOT NULL,
        symbol TEXT NOT NULL,
        open DOUBLE PRECISION,
        high DOUBLE PRECISION,
        low DOUBLE PRECISION,
        close DOUBLE PRECISION,
        volume DOUBLE PRECISION,
        trades BIGINT NOT NULL,
        open_time TIMESTAMPTZ NOT NULL,
        close_time TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (symbol, bucket)
    );

    INSERT INTO candlewick_meta (key, value)
    VALUES ('live_minutes_from', extract(epoch FROM date_bin('1 minute', now(), 'epoch'))::bigint::text);

    INSERT INTO candlewick_live_minutes
        (bucket, symbol, open, high, low, close, volume, trades, open_time, close_time)
    SELECT k.bucket, k.symbol, a.open, a.high, a.low, a.close, a.volume, a.trades,
           a.open_time, a.close_time
    FROM (
        SELECT DISTINCT symbol, date_bin('1 minute', time, 'epoch') AS bucket
        FROM ticks
        WHERE time >= date_bin('1 minute', now(), 'epoch')
          AND time < '10000-01-01 00:00:00+00'
    ) AS k
    CROSS JOIN LATERAL candlewick_minute_candle(k.symbol, k.bucket) AS a
    WHERE a.trades > 0;

    -- As the plain flavour's `candlewick_recompute_minutes` (0007), on the live minutes: the
    -- rows are locked first (in one order), so a concurrent writer of the same minutes, which
    -- must lock the same row to merge into it, either committed before (and the recomputation,
    -- a new statement with a fresh READ COMMITTED snapshot, sees its ticks) or waits and merges
    -- into the recomputed candle.
    CREATE FUNCTION candlewick_recompute_live_minutes(symbols TEXT[], buckets TIMESTAMPTZ[])
    RETURNS void LANGUAGE plpgsql AS $fn$
    BEGIN
        PERFORM
        FROM candlewick_live_minutes c
        JOIN unnest(symbols, buckets) AS k(symbol, bucket)
          ON c.symbol = k.symbol AND c.bucket = k.bucket
        ORDER BY c.symbol, c.bucket
        FOR UPDATE OF c;

        DELETE FROM candlewick_live_minutes c
        USING unnest(symbols, buckets) AS k(symbol, bucket)
        WHERE c.symbol = k.symbol
          AND c.bucket = k.bucket
          AND NOT EXISTS (
              SELECT FROM ticks t
              WHERE t.symbol = k.symbol
                AND t.time >= k.bucket
                AND t.time < k.bucket + INTERVAL '1 minute'
                AND (t.price IS NULL OR (t.price > '-Infinity' AND t.price < 'Infinity'))
                AND (t.volume IS NULL OR (t.volume > '-Infinity' AND t.volume < 'Infinity')));

        INSERT INTO candlewick_live_minutes AS c
            (bucket, symbol, open, high, low, close, volume, trades, open_time, close_time)
        SELECT k.bucket, k.symbol, a.open, a.high, a.low, a.close, a.volume, a.trades,
               a.open_time, a.close_time
        FROM unnest(symbols, buckets) AS k(symbol, bucket)
        CROSS JOIN LATERAL candlewick_minute_candle(k.symbol, k.bucket) AS a
        WHERE a.trades > 0
        ORDER BY k.symbol, k.bucket
        ON CONFLICT (symbol, bucket) DO UPDATE SET
            open = excluded.open,
            high = excluded.high,
            low = excluded.low,
            close = excluded.close,
            volume = excluded.volume,
            trades = excluded.trades,
            open_time = excluded.open_time,
            close_time = excluded.close_time;
    END
    $fn$;

    -- As in 0007 (the journal, and COPY's invalidations below the watermark), and the live
    -- minutes from `live_minutes_from` on: UPDATE and DELETE recompute the minutes their old
    -- rows were in; INSERT, and new rows of an UPDATE in other minutes, merge their usable ticks.
    CREATE OR REPLACE FUNCTION candlewick_ticks_changed() RETURNS trigger
    LANGUAGE plpgsql AS $fn$
    DECLARE
        watermark TIMESTAMPTZ;
        live_from TIMESTAMPTZ;
        symbols TEXT[];
        buckets TIMESTAMPTZ[];
    BEGIN
        IF TG_OP = 'TRUNCATE' THEN
            DELETE FROM candlewick_live_minutes;
            INSERT INTO candle_changes (symbol, bucket) VALUES (NULL, NULL);
            RETURN NULL;
        END IF;

        SELECT to_timestamp(value::bigint) INTO live_from
        FROM candlewick_meta
        WHERE key = 'live_minutes_from';

        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            INSERT INTO candle_changes (symbol, bucket)
            SELECT DISTINCT symbol, date_bin('1 minute', time, 'epoch') FROM old_rows
            WHERE time >= '0001-01-01 00:00:00+00' AND time < '10000-01-01 00:00:00+00';
            SELECT array_agg(symbol ORDER BY symbol, bucket), array_agg(bucket ORDER BY symbol, bucket)
            INTO symbols, buckets
            FROM (
                SELECT DISTINCT symbol, date_bin('1 minute', time, 'epoch') AS bucket
                FROM old_rows
                WHERE time >= live_from AND time < '10000-01-01 00:00:00+00'
            ) AS k;
            IF symbols IS NOT NULL THEN
                PERFORM candlewick_recompute_live_minutes(symbols, buckets);
            END IF;
            IF TG_OP = 'DELETE' THEN
                RETURN NULL;
            END IF;
        END IF;

        -- New rows (of an INSERT, or of an UPDATE outside the minutes just recomputed).
        -- A bulk INSERT (more minutes than a poll lists: an import) is journaled as one
        -- wholesale entry, as on plain PostgreSQL (0007): every poll reloads after it anyway,
        -- and the continuous aggregates need no journal to refresh.
        IF TG_OP = 'INSERT' THEN
            WITH minutes AS MATERIALIZED (
                SELECT DISTINCT symbol, date_bin('1 minute', time, 'epoch') AS bucket
                FROM new_rows
                WHERE time >= '0001-01-01 00:00:00+00' AND time < '10000-01-01 00:00:00+00'
            ),
            bulk AS (
                SELECT count(*) > 100000 AS yes FROM minutes
            )
            INSERT INTO candle_changes (symbol, bucket)
            SELECT symbol, bucket FROM minutes WHERE NOT (SELECT yes FROM bulk)
            UNION ALL
            SELECT NULL, NULL WHERE (SELECT yes FROM bulk);
        ELSE
            INSERT INTO candle_changes (symbol, bucket)
            SELECT DISTINCT symbol, date_bin('1 minute', time, 'epoch') FROM new_rows
            WHERE time >= '0001-01-01 00:00:00+00' AND time < '10000-01-01 00:00:00+00'
            EXCEPT
            SELECT DISTINCT symbol, date_bin('1 minute', time, 'epoch') FROM old_rows
            WHERE time >= '0001-01-01 00:00:00+00' AND time < '10000-01-01 00:00:00+00';
        END IF;

        INSERT INTO candlewick_live_minutes AS c
            (bucket, symbol, open, high, low, close, volume, trades, open_time, close_time)
        SELECT
            date_bin('1 minute', n.time, 'epoch') AS bucket,
            n.symbol,
            (array_agg(n.price ORDER BY n.time))[1],
            max(n.price),
            min(n.price),
            (array_agg(n.price ORDER BY n.time DESC))[1],
            sum(n.volume),
            count(*),
            min(n.time),
            max(n.time)
        FROM new_rows n
        WHERE n.time >= live_from AND n.time < '10000-01-01 00:00:00+00'
          AND (n.price IS NULL OR (n.price > '-Infinity' AND n.price < 'Infinity'))
          AND (n.volume IS NULL OR (n.volume > '-Infinity' AND n.volume < 'Infinity'))
          AND (symbols IS NULL
               OR (n.symbol, date_bin('1 minute', n.time, 'epoch')) NOT IN (
                   SELECT * FROM unnest(symbols, buckets)))
        GROUP BY 1, 2
        ORDER BY 2, 1
        ON CONFLICT (symbol, bucket) DO UPDATE SET
            open = CASE WHEN excluded.open_time < c.open_time THEN excluded.open ELSE c.open END,
            open_time = least(c.open_time, excluded.open_time),
            high = greatest(c.high, excluded.high),
            low = least(c.low, excluded.low),
            close = CASE WHEN excluded.close_time > c.close_time THEN excluded.close ELSE c.close END,
            close_time = greatest(c.close_time, excluded.close_time),
            -- sum() skips NULL volumes: so does the merge.
            volume = coalesce(c.volume + excluded.volume, c.volume, excluded.volume),
            trades = c.trades + excluded.trades;

        IF TG_OP = 'INSERT' AND pg_trigger_depth() = 1 AND current_query() ~* '\mcopy\M' THEN
            SELECT _timescaledb_functions.to_timestamp(
                       _timescaledb_functions.cagg_watermark(c.mat_hypertable_id))
            INTO watermark
            FROM _timescaledb_catalog.continuous_agg c
            WHERE c.user_view_name = 'one_min_candle';
            UPDATE ticks t
            SET price = t.price
            FROM new_rows n
            WHERE n.time < watermark
              AND t.time = n.time
              AND t.symbol = n.symbol;
        END IF;
        RETURN NULL;
    END
    $fn$;
END
$flavour$;

-- Both flavours: the prune also moves the live minutes' start to what the journal keeps, where
-- they exist (TimescaleDB), and drops the rows before it. A writer that read the old start may
-- still merge into a minute before the new one: the poll no longer reads that row, and the next
-- prune drops it. As in 0009, on plain PostgreSQL it folds the hour and day rollups first and
-- never drops a journal entry the fold has not taken in.
CREATE OR REPLACE FUNCTION candlewick_prune_journal(keep INTERVAL) RETURNS BIGINT
LANGUAGE plpgsql AS $fn$
DECLARE
    horizon XID8;
    folded XID8;
    pruned BIGINT;
    live_from TIMESTAMPTZ;
BEGIN
    INSERT INTO candle_changes_marks (oldest_running) VALUES (pg_snapshot_xmin(pg_current_snapshot()));
    IF to_regclass('candlewick_live_minutes') IS NOT NULL THEN
        live_from := date_bin('1 minute', now() - keep, 'epoch');
        UPDATE candlewick_meta
        SET value = extract(epoch FROM live_from)::bigint::text
        WHERE key = 'live_minutes_from'
          AND to_timestamp(value::bigint) < live_from;
        IF FOUND THEN
            DELETE FROM candlewick_live_minutes WHERE bucket < live_from;
        END IF;
    END IF;
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
