-- Candles are made of usable ticks only, on both flavours. Another program can store ticks
-- candlewick refuses: times outside the years 0001 to 9999 (UTC), `infinity` included, and NaN
-- or infinite prices or volumes. Such a tick used to become a candle (at bucket `infinity`,
-- whose epoch no bigint holds, or with a NaN price, which JSON writes as null) and stop every
-- poll. Now a tick is usable when
--
--     time >= '0001-01-01 00:00:00+00' AND time < '10000-01-01 00:00:00+00'
--     AND (price IS NULL OR (price > '-Infinity' AND price < 'Infinity'))
--     AND (volume IS NULL OR (volume > '-Infinity' AND volume < 'Infinity'))
--
-- (NaN sorts above Infinity in PostgreSQL, so the bounds refuse it too; `usable_tick_sql!` in
-- src/db/mod.rs writes the same condition). Other ticks journal no minute and build no candle;
-- the admin list names them and can delete them.
--
-- Redefined here: candlewick_minute_candle (0003), and per flavour candlewick_ticks_changed
-- (0004), candlewick_recompute_minutes (0004, plain) and the continuous aggregate
-- one_min_candle (0002, TimescaleDB: same columns, options and refresh policy, re-created
-- WITH NO DATA; the server refreshes it from the beginning of time at start).
--
-- Also the first texts of 0003 and 0004 (see migrations/README.md) end up with the current
-- schema: the candle function gets its eight columns, the candles' unused bucket index goes.

-- The few unusable ticks, found without reading every tick (the admin list counts them).
CREATE INDEX ticks_unusable ON ticks (time, symbol)
    WHERE NOT (
        time >= '0001-01-01 00:00:00+00' AND time < '10000-01-01 00:00:00+00'
        AND (price IS NULL OR (price > '-Infinity' AND price < 'Infinity'))
        AND (volume IS NULL OR (volume > '-Infinity' AND volume < 'Infinity'))
    );

-- `/api/corrections` lists newest minute first, then by id: this index hands its rows over in
-- that order, so a page costs what its `limit` asks, not what the audit trail holds. Only
-- single-tick writes record `tick_time`, and only they count as corrections.
CREATE INDEX audit_log_corrections
    ON audit_log (symbol, date_bin('1 minute', tick_time, 'epoch') DESC, id)
    WHERE tick_time IS NOT NULL;

-- Journal entries an unusable tick left behind; the poll skips them too.
DELETE FROM candle_changes
WHERE symbol IS NOT NULL
  AND NOT (bucket >= '0001-01-01 00:00:00+00' AND bucket < '10000-01-01 00:00:00+00');

-- A minute's candle from its usable ticks (trades counts those). The first text of 0003 had
-- six columns: a new return type needs DROP rather than CREATE OR REPLACE.
DROP FUNCTION IF EXISTS candlewick_minute_candle(TEXT, TIMESTAMPTZ);
CREATE FUNCTION candlewick_minute_candle(p_symbol TEXT, p_bucket TIMESTAMPTZ)
RETURNS TABLE (
    open DOUBLE PRECISION,
    high DOUBLE PRECISION,
    low DOUBLE PRECISION,
    close DOUBLE PRECISION,
    volume DOUBLE PRECISION,
    trades BIGINT,
    open_time TIMESTAMPTZ,
    close_time TIMESTAMPTZ
)
LANGUAGE sql STABLE ROWS 1 AS $fn$
    SELECT
        (array_agg(t.price ORDER BY t.time))[1],
        max(t.price),
        min(t.price),
        (array_agg(t.price ORDER BY t.time DESC))[1],
        sum(t.volume),
        count(*),
        min(t.time),
        max(t.time)
    FROM ticks t
    WHERE t.symbol = p_symbol
      AND t.time >= p_bucket
      AND t.time < p_bucket + INTERVAL '1 minute'
      AND (t.price IS NULL OR (t.price > '-Infinity' AND t.price < 'Infinity'))
      AND (t.volume IS NULL OR (t.volume > '-Infinity' AND t.volume < 'Infinity'))
$fn$;

DO $flavour$
DECLARE
    symbols TEXT[];
    buckets TIMESTAMPTZ[];
BEGIN
    IF EXISTS (SELECT FROM candlewick_meta WHERE key = 'flavour' AND value = 'postgresql') THEN
        -- The first text of 0004 kept it; nothing reads it.
        DROP INDEX IF EXISTS one_min_candle_bucket;

        -- As in 0004, with "its minute's ticks" meaning its usable ones: a minute left with
        -- none loses its candle. The caller passes usable buckets only.
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
                    AND t.time < k.bucket + INTERVAL '1 minute'
                    AND (t.price IS NULL OR (t.price > '-Infinity' AND t.price < 'Infinity'))
                    AND (t.volume IS NULL OR (t.volume > '-Infinity' AND t.volume < 'Infinity')));

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

        -- As in 0004: UPDATE and DELETE recompute the (usable) minutes their old rows were in;
        -- INSERT, and new rows of an UPDATE in other minutes, merge their usable ticks. An
        -- unusable tick touches no candle and journals nothing.
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
                    WHERE time >= '0001-01-01 00:00:00+00' AND time < '10000-01-01 00:00:00+00'
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

            IF TG_OP = 'INSERT' AND (SELECT count(*) FROM new_rows) = 1 THEN
                WITH merged AS (
                    SELECT symbol, date_bin('1 minute', time, 'epoch') AS bucket,
                           price AS open, price AS high, price AS low, price AS close,
                           volume, 1 AS trades, time AS open_time, time AS close_time
                    FROM new_rows
                    WHERE time >= '0001-01-01 00:00:00+00' AND time < '10000-01-01 00:00:00+00'
                      AND (price IS NULL OR (price > '-Infinity' AND price < 'Infinity'))
                      AND (volume IS NULL OR (volume > '-Infinity' AND volume < 'Infinity'))
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
                WHERE n.time >= '0001-01-01 00:00:00+00' AND n.time < '10000-01-01 00:00:00+00'
                  AND (n.price IS NULL OR (n.price > '-Infinity' AND n.price < 'Infinity'))
                  AND (n.volume IS NULL OR (n.volume > '-Infinity' AND n.volume < 'Infinity'))
                  AND (symbols IS NULL
                       OR (n.symbol, date_bin('1 minute', n.time, 'epoch')) NOT IN (
                           SELECT * FROM unnest(symbols, buckets)))
                GROUP BY 1, 2
            ),
            -- A bulk statement (an import: more minutes than a poll lists, see
            -- `MAX_CHANGES_PER_POLL` in src/db/journal.rs) is journaled by the hours it changed
            -- and one wholesale entry (NULL, as a TRUNCATE): a poll reloads what it holds
            -- after it either way, and the hours are what the rollup fold needs. A row per
            -- minute cost three years of minutes 5.8 million journal rows, 7 s to write and
            -- more to fold and prune.
            bulk AS (
                SELECT count(*) > 100000 AS yes FROM merged
            ),
            journal AS (
                INSERT INTO candle_changes (symbol, bucket)
                SELECT symbol, bucket FROM merged WHERE NOT (SELECT yes FROM bulk)
                UNION ALL
                SELECT DISTINCT symbol, date_bin('1 hour', bucket, 'epoch')
                FROM merged WHERE (SELECT yes FROM bulk)
                UNION ALL
                SELECT NULL, NULL WHERE (SELECT yes FROM bulk)
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

        -- Candles unusable ticks already made: out-of-range buckets go, minutes that hold a
        -- NaN or infinite tick are recomputed without it (and journaled for running pollers).
        DELETE FROM candlewick_candles
        WHERE NOT (bucket >= '0001-01-01 00:00:00+00' AND bucket < '10000-01-01 00:00:00+00');
        SELECT array_agg(symbol ORDER BY symbol, bucket), array_agg(bucket ORDER BY symbol, bucket)
        INTO symbols, buckets
        FROM (
            SELECT DISTINCT symbol, date_bin('1 minute', time, 'epoch') AS bucket
            FROM ticks
            WHERE NOT (
                time >= '0001-01-01 00:00:00+00' AND time < '10000-01-01 00:00:00+00'
                AND (price IS NULL OR (price > '-Infinity' AND price < 'Infinity'))
                AND (volume IS NULL OR (volume > '-Infinity' AND volume < 'Infinity'))
            )
            AND time >= '0001-01-01 00:00:00+00' AND time < '10000-01-01 00:00:00+00'
        ) AS k;
        IF symbols IS NOT NULL THEN
            INSERT INTO candle_changes (symbol, bucket) SELECT * FROM unnest(symbols, buckets);
            PERFORM candlewick_recompute_minutes(symbols, buckets);
        END IF;
    ELSE
        -- As in 0004, journaling usable minutes only.
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
                SELECT DISTINCT symbol, date_bin('1 minute', time, 'epoch') FROM new_rows
                WHERE time >= '0001-01-01 00:00:00+00' AND time < '10000-01-01 00:00:00+00';
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
                SELECT DISTINCT symbol, date_bin('1 minute', time, 'epoch') FROM old_rows
                WHERE time >= '0001-01-01 00:00:00+00' AND time < '10000-01-01 00:00:00+00';
            ELSE
                INSERT INTO candle_changes (symbol, bucket)
                SELECT symbol, date_bin('1 minute', time, 'epoch') FROM old_rows
                WHERE time >= '0001-01-01 00:00:00+00' AND time < '10000-01-01 00:00:00+00'
                UNION
                SELECT symbol, date_bin('1 minute', time, 'epoch') FROM new_rows
                WHERE time >= '0001-01-01 00:00:00+00' AND time < '10000-01-01 00:00:00+00';
            END IF;
            RETURN NULL;
        END
        $fn$
        $sql$;

        -- The aggregate of 0002 with the usable-tick condition; the same columns, options and
        -- policy. Its materialized minutes go with it: the server's first refresh rebuilds them.
        DROP MATERIALIZED VIEW one_min_candle;
        EXECUTE $sql$
            CREATE MATERIALIZED VIEW one_min_candle
            WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
            SELECT
                time_bucket('1 minute', time) AS bucket,
                symbol,
                first(price, time) AS open,
                max(price) AS high,
                min(price) AS low,
                last(price, time) AS close,
                sum(volume) AS volume,
                count(*) AS trades
            FROM ticks
            WHERE time >= '0001-01-01 00:00:00+00' AND time < '10000-01-01 00:00:00+00'
              AND (price IS NULL OR (price > '-Infinity' AND price < 'Infinity'))
              AND (volume IS NULL OR (volume > '-Infinity' AND volume < 'Infinity'))
            GROUP BY bucket, symbol
            WITH NO DATA
        $sql$;
        PERFORM add_continuous_aggregate_policy('one_min_candle',
            start_offset => NULL,
            end_offset => INTERVAL '1 minute',
            schedule_interval => INTERVAL '1 minute');
    END IF;
END
$flavour$;
