-- Writes cost what they change, not what is stored.
--
-- Plain flavour: a pure INSERT merges into the stored candle of each minute it touches without
-- reading the minute's other ticks. high/low/volume/trades are commutative; open/close keep the
-- time of their tick (`open_time`, `close_time`), so the merge is commutative too and concurrent
-- writers of one minute need no ordering beyond the row lock the upsert takes. Only UPDATE and
-- DELETE (which can lower a high or remove the first tick) recompute their minutes from `ticks`.
-- The candles live in `candlewick_candles`; `one_min_candle` becomes a view of it without the
-- two bookkeeping columns, so `SELECT *` shows what the continuous aggregate shows.
--
-- Both flavours: the journal drops its `changed_at` index (pruning goes by transaction horizon,
-- see `candlewick_prune_journal`), and the TimescaleDB flavour looks up the aggregate's
-- watermark only for COPY, the one path whose invalidations it has to make up for.

DROP INDEX candle_changes_changed_at;

-- Pruning must never drop the entry of a transaction that had not committed when a poller
-- last read: an entry is dropped once its transaction had finished more than `keep` ago. Each
-- call records the oldest transaction still running (the xmin of a fresh snapshot); an entry
-- below a mark taken more than `keep` ago belongs to a transaction that ended before then.
CREATE TABLE candle_changes_marks (
    at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    oldest_running XID8 NOT NULL
);

CREATE FUNCTION candlewick_prune_journal(keep INTERVAL) RETURNS BIGINT
LANGUAGE plpgsql AS $fn$
DECLARE
    horizon XID8;
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
        ALTER TABLE one_min_candle RENAME TO candlewick_candles;
        -- Every read names a symbol (the primary key's first column): a bulk load need not
        -- maintain a second index per candle.
        DROP INDEX one_min_candle_bucket;
        ALTER TABLE candlewick_candles
            ADD COLUMN open_time TIMESTAMPTZ,
            ADD COLUMN close_time TIMESTAMPTZ;
        UPDATE candlewick_candles c
        SET (open_time, close_time) = (
            SELECT min(t.time), max(t.time)
            FROM ticks t
            WHERE t.symbol = c.symbol
              AND t.time >= c.bucket
              AND t.time < c.bucket + INTERVAL '1 minute'
        );
        ALTER TABLE candlewick_candles
            ALTER COLUMN open_time SET NOT NULL,
            ALTER COLUMN close_time SET NOT NULL;
        CREATE VIEW one_min_candle AS
            SELECT bucket, symbol, open, high, low, close, volume, trades
            FROM candlewick_candles;

        -- Recomputes the given minutes from `ticks` after an UPDATE or DELETE. The minutes'
        -- candle rows are locked first (in one order), so a concurrent writer of the same
        -- minutes, which must lock the same row to merge into it, either committed before
        -- (and the recomputation, a new statement with a fresh READ COMMITTED snapshot, sees
        -- its ticks) or waits and merges into the recomputed candle. Under REPEATABLE READ the
        -- lock raises a serialization failure instead of writing a stale candle.
        EXECUTE $sql$
        CREATE OR REPLACE FUNCTION candlewick_recompute_minutes(symbols TEXT[], buckets TIMESTAMPTZ[])
        RETURNS void LANGUAGE plpgsql AS $fn$
        BEGIN
            PERFORM
            FROM candlewick_candles c
            JOIN unnest(symbols, buckets) AS k(symbol, bucket)
              ON c.symbol = k.symbol AND c.bucket = k.bucket
            ORDER BY c.symbol, c.bucket
            FOR UPDATE OF c;

            DELETE FROM candlewick_candles c
            USING unnest(symbols, buckets) AS k(symbol, bucket)
            WHERE c.symbol = k.symbol
              AND c.bucket = k.bucket
              AND NOT EXISTS (
                  SELECT FROM ticks t
                  WHERE t.symbol = k.symbol
                    AND t.time >= k.bucket
                    AND t.time < k.bucket + INTERVAL '1 minute');

            INSERT INTO candlewick_candles AS c
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
        $fn$
        $sql$;

        -- INSERT merges each touched minute once (the new rows aggregated per minute first);
        -- UPDATE recomputes the minutes its old rows were in and merges new rows that moved to
        -- other minutes; DELETE recomputes. Every statement journals the minutes it touched.
        EXECUTE $sql$
        CREATE OR REPLACE FUNCTION candlewick_ticks_changed() RETURNS trigger
        LANGUAGE plpgsql AS $fn$
        DECLARE
            symbols TEXT[];
            buckets TIMESTAMPTZ[];
        BEGIN
            IF TG_OP = 'TRUNCATE' THEN
                DELETE FROM candlewick_candles;
                INSERT INTO candle_changes (symbol, bucket) VALUES (NULL, NULL);
                RETURN NULL;
            END IF;

            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                SELECT array_agg(symbol ORDER BY symbol, bucket), array_agg(bucket ORDER BY symbol, bucket)
                INTO symbols, buckets
                FROM (
                    SELECT DISTINCT symbol, date_bin('1 minute', time, 'epoch') AS bucket
                    FROM old_rows
                ) AS k;
                IF symbols IS NOT NULL THEN
                    INSERT INTO candle_changes (symbol, bucket)
                    SELECT * FROM unnest(symbols, buckets);
                    PERFORM candlewick_recompute_minutes(symbols, buckets);
                END IF;
                IF TG_OP = 'DELETE' THEN
                    RETURN NULL;
                END IF;
            END IF;

            -- INSERT, and the new rows of an UPDATE outside the minutes just recomputed, as
            -- one row per (symbol, minute). A one-row INSERT (a live feed's usual statement)
            -- is such a row already: it skips the aggregation, a third of its cost.
            IF TG_OP = 'INSERT' AND (SELECT count(*) FROM new_rows) = 1 THEN
                WITH merged AS (
                    SELECT symbol, date_bin('1 minute', time, 'epoch') AS bucket,
                           price AS open, price AS high, price AS low, price AS close,
                           volume, 1 AS trades, time AS open_time, time AS close_time
                    FROM new_rows
                ),
                journal AS (
                    INSERT INTO candle_changes (symbol, bucket)
                    SELECT symbol, bucket FROM merged
                )
                INSERT INTO candlewick_candles AS c
                    (bucket, symbol, open, high, low, close, volume, trades, open_time, close_time)
                SELECT bucket, symbol, open, high, low, close, volume, trades, open_time, close_time
                FROM merged
                ON CONFLICT (symbol, bucket) DO UPDATE SET
                    open = CASE WHEN excluded.open_time < c.open_time THEN excluded.open ELSE c.open END,
                    open_time = least(c.open_time, excluded.open_time),
                    high = greatest(c.high, excluded.high),
                    low = least(c.low, excluded.low),
                    close = CASE WHEN excluded.close_time > c.close_time THEN excluded.close ELSE c.close END,
                    close_time = greatest(c.close_time, excluded.close_time),
                    volume = coalesce(c.volume + excluded.volume, c.volume, excluded.volume),
                    trades = c.trades + excluded.trades;
                RETURN NULL;
            END IF;
            WITH merged AS (
                SELECT
                    n.symbol,
                    date_bin('1 minute', n.time, 'epoch') AS bucket,
                    (array_agg(n.price ORDER BY n.time))[1] AS open,
                    max(n.price) AS high,
                    min(n.price) AS low,
                    (array_agg(n.price ORDER BY n.time DESC))[1] AS close,
                    sum(n.volume) AS volume,
                    count(*) AS trades,
                    min(n.time) AS open_time,
                    max(n.time) AS close_time
                FROM new_rows n
                WHERE symbols IS NULL
                   OR (n.symbol, date_bin('1 minute', n.time, 'epoch')) NOT IN (
                       SELECT * FROM unnest(symbols, buckets))
                GROUP BY 1, 2
            ),
            journal AS (
                INSERT INTO candle_changes (symbol, bucket)
                SELECT symbol, bucket FROM merged
            )
            INSERT INTO candlewick_candles AS c
                (bucket, symbol, open, high, low, close, volume, trades, open_time, close_time)
            SELECT bucket, symbol, open, high, low, close, volume, trades, open_time, close_time
            FROM merged
            ORDER BY symbol, bucket
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
            RETURN NULL;
        END
        $fn$
        $sql$;
    ELSE
        -- TimescaleDB 2.27 logs no continuous-aggregate invalidation for COPY into a hypertable
        -- that has transition-table triggers (ours), so rows a COPY puts below the aggregate's
        -- watermark are rewritten in place by an UPDATE, which does log it. INSERT statements
        -- log their invalidations themselves: they skip the watermark lookup (a catalog read
        -- per statement). A COPY shows in the client's query text.
        EXECUTE $sql$
        CREATE OR REPLACE FUNCTION candlewick_ticks_changed() RETURNS trigger
        LANGUAGE plpgsql AS $fn$
        DECLARE
            watermark TIMESTAMPTZ;
        BEGIN
            IF TG_OP = 'TRUNCATE' THEN
                INSERT INTO candle_changes (symbol, bucket) VALUES (NULL, NULL);
            ELSIF TG_OP = 'INSERT' THEN
                INSERT INTO candle_changes (symbol, bucket)
                SELECT DISTINCT symbol, date_bin('1 minute', time, 'epoch') FROM new_rows;
                IF pg_trigger_depth() = 1 AND current_query() ~* '\mcopy\M' THEN
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
            ELSIF TG_OP = 'DELETE' THEN
                INSERT INTO candle_changes (symbol, bucket)
                SELECT DISTINCT symbol, date_bin('1 minute', time, 'epoch') FROM old_rows;
            ELSE
                INSERT INTO candle_changes (symbol, bucket)
                SELECT symbol, date_bin('1 minute', time, 'epoch') FROM old_rows
                UNION
                SELECT symbol, date_bin('1 minute', time, 'epoch') FROM new_rows;
            END IF;
            RETURN NULL;
        END
        $fn$
        $sql$;
    END IF;
END
$flavour$;
