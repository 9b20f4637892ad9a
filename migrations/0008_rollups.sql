-- Hour and day rollups, so that a page of wide candles reads one row per bar instead of
-- rolling up every minute under it: `one_hour_candle` and `one_day_candle`, with the columns
-- of `one_min_candle`, on both flavours. 5m and 15m read the minute candles, 4h the hours.
--
-- Plain flavour: tables kept from the changes of the minute table `candlewick_candles` by
-- statement triggers with transition tables, one level feeding the next (minutes -> hours ->
-- days), so whatever decides which ticks enter a minute decides the hours and days too. New
-- minutes (hours) merge into their hour (day) at constant cost, by the times of their first
-- and last tick as the minute merge does; changed or deleted minutes (hours) recompute their
-- hour (day) from its at most 60 minutes (24 hours).


-- The functions exist on both flavours; the tables and triggers (at the end) only on the plain one.

-- Recomputes the hours `(symbols[i], buckets[i])` from their at most 60 minutes, after
-- minutes changed or went away. The hour rows are locked first, in key order: a concurrent
-- writer merging into one of them waits, then merges into the recomputed candle; one that
-- committed before is seen by the recomputation (a new statement, with a fresh snapshot under
-- READ COMMITTED).
CREATE FUNCTION candlewick_recompute_hours(symbols TEXT[], buckets TIMESTAMPTZ[]) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM
    FROM candlewick_hour_candles c
    JOIN unnest(symbols, buckets) AS k(symbol, bucket)
      ON c.symbol = k.symbol AND c.bucket = k.bucket
    ORDER BY c.symbol, c.bucket
    FOR UPDATE OF c;

    DELETE FROM candlewick_hour_candles c
    USING unnest(symbols, buckets) AS k(symbol, bucket)
    WHERE c.symbol = k.symbol
      AND c.bucket = k.bucket
      AND NOT EXISTS (
          SELECT FROM candlewick_candles f
          WHERE f.symbol = k.symbol
            AND f.bucket >= k.bucket
            AND f.bucket < k.bucket + INTERVAL '1 hour');

    INSERT INTO candlewick_hour_candles AS c
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
    WHERE a.trades IS NOT NULL
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

-- Keeps `candlewick_hour_candles` from the changes of `candlewick_candles`: inserted minutes merge into their
-- hour; an update that only grew a minute (more ticks: open no later, close no earlier,
-- high no lower, low no higher, as the live feed's merge does) merges its difference; any other
-- change recomputes the hours it touched. A statement that emptied `candlewick_candles` (TRUNCATE of
-- `ticks` deletes every minute) empties `candlewick_hour_candles` without recomputing anything.
CREATE FUNCTION candlewick_rollup_hours() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    symbols TEXT[];
    buckets TIMESTAMPTZ[];
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM candlewick_hour_candles;
        RETURN NULL;
    END IF;

    IF TG_OP = 'INSERT' THEN
        INSERT INTO candlewick_hour_candles AS c
            (bucket, symbol, open, high, low, close, volume, trades, open_time, close_time)
        SELECT
            date_bin('1 hour', n.bucket, 'epoch'),
            n.symbol,
            (array_agg(n.open ORDER BY n.open_time))[1],
            max(n.high),
            min(n.low),
            (array_agg(n.close ORDER BY n.close_time DESC))[1],
            sum(n.volume),
            sum(n.trades),
            min(n.open_time),
            max(n.close_time)
        FROM new_rows n
        GROUP BY 2, 1
        ORDER BY 2, 1
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

    IF TG_OP = 'DELETE' THEN
        IF (SELECT count(*) FROM old_rows) > 10000 AND NOT EXISTS (SELECT FROM candlewick_candles) THEN
            DELETE FROM candlewick_hour_candles;
            RETURN NULL;
        END IF;
        SELECT array_agg(symbol ORDER BY symbol, bucket), array_agg(bucket ORDER BY symbol, bucket)
        INTO symbols, buckets
        FROM (
            SELECT DISTINCT symbol, date_bin('1 hour', bucket, 'epoch') AS bucket FROM old_rows
        ) AS k;
    ELSE
        -- Grown minutes (same key, a superset of ticks as far as the candle can tell) merge
        -- their difference; the hours of every other changed minute are recomputed.
        SELECT array_agg(symbol ORDER BY symbol, bucket), array_agg(bucket ORDER BY symbol, bucket)
        INTO symbols, buckets
        FROM (
            SELECT o.symbol, date_bin('1 hour', o.bucket, 'epoch') AS bucket
            FROM old_rows o
            LEFT JOIN new_rows n ON n.symbol = o.symbol AND n.bucket = o.bucket
            WHERE (
                n.trades > o.trades
                AND n.open_time <= o.open_time
                AND n.close_time >= o.close_time
                AND (n.open_time < o.open_time OR n.open IS NOT DISTINCT FROM o.open)
                AND (n.close_time > o.close_time OR n.close IS NOT DISTINCT FROM o.close)
                AND n.high IS NOT DISTINCT FROM greatest(n.high, o.high)
                AND n.low IS NOT DISTINCT FROM least(n.low, o.low)
                AND (o.volume IS NULL OR n.volume IS NOT NULL)
            ) IS NOT TRUE
            UNION
            SELECT n.symbol, date_bin('1 hour', n.bucket, 'epoch')
            FROM new_rows n
            LEFT JOIN old_rows o ON n.symbol = o.symbol AND n.bucket = o.bucket
            WHERE o.symbol IS NULL
        ) AS k;
        -- The difference of each grown minute, per hour; those being recomputed are left out.
        INSERT INTO candlewick_hour_candles AS c
            (bucket, symbol, open, high, low, close, volume, trades, open_time, close_time)
        SELECT
            date_bin('1 hour', n.bucket, 'epoch'),
            n.symbol,
            (array_agg(n.open ORDER BY n.open_time))[1],
            max(n.high),
            min(n.low),
            (array_agg(n.close ORDER BY n.close_time DESC))[1],
            sum(coalesce(n.volume, 0) - coalesce(o.volume, 0)),
            sum(n.trades - o.trades),
            min(n.open_time),
            max(n.close_time)
        FROM new_rows n
        JOIN old_rows o ON n.symbol = o.symbol AND n.bucket = o.bucket
        WHERE (n.symbol, date_bin('1 hour', n.bucket, 'epoch')) NOT IN (
            SELECT * FROM unnest(coalesce(symbols, '{}'), coalesce(buckets, '{}')))
        GROUP BY 2, 1
        ORDER BY 2, 1
        ON CONFLICT (symbol, bucket) DO UPDATE SET
            open = CASE WHEN excluded.open_time < c.open_time THEN excluded.open ELSE c.open END,
            open_time = least(c.open_time, excluded.open_time),
            high = greatest(c.high, excluded.high),
            low = least(c.low, excluded.low),
            close = CASE WHEN excluded.close_time > c.close_time THEN excluded.close ELSE c.close END,
            close_time = greatest(c.close_time, excluded.close_time),
            volume = coalesce(c.volume + excluded.volume, c.volume, excluded.volume),
            trades = c.trades + excluded.trades;
    END IF;
    IF symbols IS NOT NULL THEN
        PERFORM candlewick_recompute_hours(symbols, buckets);
    END IF;
    RETURN NULL;
END
$fn$;

-- Recomputes the days `(symbols[i], buckets[i])` from their at most 24 hours, after
-- hours changed or went away. The day rows are locked first, in key order: a concurrent
-- writer merging into one of them waits, then merges into the recomputed candle; one that
-- committed before is seen by the recomputation (a new statement, with a fresh snapshot under
-- READ COMMITTED).
CREATE FUNCTION candlewick_recompute_days(symbols TEXT[], buckets TIMESTAMPTZ[]) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM
    FROM candlewick_day_candles c
    JOIN unnest(symbols, buckets) AS k(symbol, bucket)
      ON c.symbol = k.symbol AND c.bucket = k.bucket
    ORDER BY c.symbol, c.bucket
    FOR UPDATE OF c;

    DELETE FROM candlewick_day_candles c
    USING unnest(symbols, buckets) AS k(symbol, bucket)
    WHERE c.symbol = k.symbol
      AND c.bucket = k.bucket
      AND NOT EXISTS (
          SELECT FROM candlewick_hour_candles f
          WHERE f.symbol = k.symbol
            AND f.bucket >= k.bucket
            AND f.bucket < k.bucket + INTERVAL '24 hours');

    INSERT INTO candlewick_day_candles AS c
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
        FROM candlewick_hour_candles f
        WHERE f.symbol = k.symbol
          AND f.bucket >= k.bucket
          AND f.bucket < k.bucket + INTERVAL '24 hours'
    ) AS a
    WHERE a.trades IS NOT NULL
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

-- Keeps `candlewick_day_candles` from the changes of `candlewick_hour_candles`: inserted hours merge into their
-- day; an update that only grew a hour (more ticks: open no later, close no earlier,
-- high no lower, low no higher, as the live feed's merge does) merges its difference; any other
-- change recomputes the days it touched. A statement that emptied `candlewick_hour_candles` (TRUNCATE of
-- `ticks` deletes every minute) empties `candlewick_day_candles` without recomputing anything.
CREATE FUNCTION candlewick_rollup_days() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    symbols TEXT[];
    buckets TIMESTAMPTZ[];
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM candlewick_day_candles;
        RETURN NULL;
    END IF;

    IF TG_OP = 'INSERT' THEN
        INSERT INTO candlewick_day_candles AS c
            (bucket, symbol, open, high, low, close, volume, trades, open_time, close_time)
        SELECT
            date_bin('24 hours', n.bucket, 'epoch'),
            n.symbol,
            (array_agg(n.open ORDER BY n.open_time))[1],
            max(n.high),
            min(n.low),
            (array_agg(n.close ORDER BY n.close_time DESC))[1],
            sum(n.volume),
            sum(n.trades),
            min(n.open_time),
            max(n.close_time)
        FROM new_rows n
        GROUP BY 2, 1
        ORDER BY 2, 1
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

    IF TG_OP = 'DELETE' THEN
        IF (SELECT count(*) FROM old_rows) > 10000 AND NOT EXISTS (SELECT FROM candlewick_hour_candles) THEN
            DELETE FROM candlewick_day_candles;
            RETURN NULL;
        END IF;
        SELECT array_agg(symbol ORDER BY symbol, bucket), array_agg(bucket ORDER BY symbol, bucket)
        INTO symbols, buckets
        FROM (
            SELECT DISTINCT symbol, date_bin('24 hours', bucket, 'epoch') AS bucket FROM old_rows
        ) AS k;
    ELSE
        -- Grown hours (same key, a superset of ticks as far as the candle can tell) merge
        -- their difference; the days of every other changed hour are recomputed.
        SELECT array_agg(symbol ORDER BY symbol, bucket), array_agg(bucket ORDER BY symbol, bucket)
        INTO symbols, buckets
        FROM (
            SELECT o.symbol, date_bin('24 hours', o.bucket, 'epoch') AS bucket
            FROM old_rows o
            LEFT JOIN new_rows n ON n.symbol = o.symbol AND n.bucket = o.bucket
            WHERE (
                n.trades > o.trades
                AND n.open_time <= o.open_time
                AND n.close_time >= o.close_time
                AND (n.open_time < o.open_time OR n.open IS NOT DISTINCT FROM o.open)
                AND (n.close_time > o.close_time OR n.close IS NOT DISTINCT FROM o.close)
                AND n.high IS NOT DISTINCT FROM greatest(n.high, o.high)
                AND n.low IS NOT DISTINCT FROM least(n.low, o.low)
                AND (o.volume IS NULL OR n.volume IS NOT NULL)
            ) IS NOT TRUE
            UNION
            SELECT n.symbol, date_bin('24 hours', n.bucket, 'epoch')
            FROM new_rows n
            LEFT JOIN old_rows o ON n.symbol = o.symbol AND n.bucket = o.bucket
            WHERE o.symbol IS NULL
        ) AS k;
        -- The difference of each grown hour, per day; those being recomputed are left out.
        INSERT INTO candlewick_day_candles AS c
            (bucket, symbol, open, high, low, close, volume, trades, open_time, close_time)
        SELECT
            date_bin('24 hours', n.bucket, 'epoch'),
            n.symbol,
            (array_agg(n.open ORDER BY n.open_time))[1],
            max(n.high),
            min(n.low),
            (array_agg(n.close ORDER BY n.close_time DESC))[1],
            sum(coalesce(n.volume, 0) - coalesce(o.volume, 0)),
            sum(n.trades - o.trades),
            min(n.open_time),
            max(n.close_time)
        FROM new_rows n
        JOIN old_rows o ON n.symbol = o.symbol AND n.bucket = o.bucket
        WHERE (n.symbol, date_bin('24 hours', n.bucket, 'epoch')) NOT IN (
            SELECT * FROM unnest(coalesce(symbols, '{}'), coalesce(buckets, '{}')))
        GROUP BY 2, 1
        ORDER BY 2, 1
        ON CONFLICT (symbol, bucket) DO UPDATE SET
            open = CASE WHEN excluded.open_time < c.open_time THEN excluded.open ELSE c.open END,
            open_time = least(c.open_time, excluded.open_time),
            high = greatest(c.high, excluded.high),
            low = least(c.low, excluded.low),
            close = CASE WHEN excluded.close_time > c.close_time THEN excluded.close ELSE c.close END,
            close_time = greatest(c.close_time, excluded.close_time),
            volume = coalesce(c.volume + excluded.volume, c.volume, excluded.volume),
            trades = c.trades + excluded.trades;
    END IF;
    IF symbols IS NOT NULL THEN
        PERFORM candlewick_recompute_days(symbols, buckets);
    END IF;
    RETURN NULL;
END
$fn$;

DO $flavour$
BEGIN
    IF EXISTS (SELECT FROM candlewick_meta WHERE key = 'flavour' AND value = 'postgresql') THEN
        CREATE TABLE candlewick_hour_candles (
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
        CREATE TABLE candlewick_day_candles (LIKE candlewick_hour_candles INCLUDING ALL);

        CREATE VIEW one_hour_candle AS
            SELECT bucket, symbol, open, high, low, close, volume, trades
            FROM candlewick_hour_candles;
        CREATE VIEW one_day_candle AS
            SELECT bucket, symbol, open, high, low, close, volume, trades
            FROM candlewick_day_candles;

        -- What is stored already.
        INSERT INTO candlewick_hour_candles
        SELECT
            date_bin('1 hour', bucket, 'epoch'),
            symbol,
            (array_agg(open ORDER BY open_time))[1],
            max(high),
            min(low),
            (array_agg(close ORDER BY close_time DESC))[1],
            sum(volume),
            sum(trades),
            min(open_time),
            max(close_time)
        FROM candlewick_candles
        GROUP BY 1, 2;
        INSERT INTO candlewick_day_candles
        SELECT
            date_bin('24 hours', bucket, 'epoch'),
            symbol,
            (array_agg(open ORDER BY open_time))[1],
            max(high),
            min(low),
            (array_agg(close ORDER BY close_time DESC))[1],
            sum(volume),
            sum(trades),
            min(open_time),
            max(close_time)
        FROM candlewick_hour_candles
        GROUP BY 1, 2;

        CREATE TRIGGER candles_rollup_insert AFTER INSERT ON candlewick_candles
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION candlewick_rollup_hours();
        CREATE TRIGGER candles_rollup_update AFTER UPDATE ON candlewick_candles
            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION candlewick_rollup_hours();
        CREATE TRIGGER candles_rollup_delete AFTER DELETE ON candlewick_candles
            REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION candlewick_rollup_hours();
        CREATE TRIGGER candles_rollup_truncate AFTER TRUNCATE ON candlewick_candles
            FOR EACH STATEMENT EXECUTE FUNCTION candlewick_rollup_hours();

        CREATE TRIGGER hours_rollup_insert AFTER INSERT ON candlewick_hour_candles
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION candlewick_rollup_days();
        CREATE TRIGGER hours_rollup_update AFTER UPDATE ON candlewick_hour_candles
            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION candlewick_rollup_days();
        CREATE TRIGGER hours_rollup_delete AFTER DELETE ON candlewick_hour_candles
            REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION candlewick_rollup_days();
        CREATE TRIGGER hours_rollup_truncate AFTER TRUNCATE ON candlewick_hour_candles
            FOR EACH STATEMENT EXECUTE FUNCTION candlewick_rollup_days();
    END IF;
END
$flavour$;

-- Fresh planner statistics for what a bulk load of ticks in `[first_time, last_time]` changed
-- (run before the load reports done): without them a page of candles right after an import
-- was planned as a scan of every candle and a sort. On TimescaleDB the chunks of `ticks` the
-- load touched, and the aggregates' materializations (after their refresh).
CREATE FUNCTION candlewick_analyze_loaded(first_time TIMESTAMPTZ, last_time TIMESTAMPTZ)
RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    relation TEXT;
BEGIN
    IF EXISTS (SELECT FROM candlewick_meta WHERE key = 'flavour' AND value = 'timescaledb') THEN
        FOR relation IN
            SELECT format('%I.%I', chunk_schema, chunk_name)
            FROM timescaledb_information.chunks
            WHERE hypertable_name = 'ticks'
              AND range_end > first_time
              AND range_start <= last_time
            UNION ALL
            SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)
            FROM timescaledb_information.continuous_aggregates
            WHERE view_name IN ('one_min_candle', 'one_hour_candle', 'one_day_candle')
        LOOP
            EXECUTE 'ANALYZE ' || relation;
        END LOOP;
    ELSE
        ANALYZE ticks;
        ANALYZE candlewick_candles;
        ANALYZE candlewick_hour_candles;
        ANALYZE candlewick_day_candles;
    END IF;
    -- The journal too: the load wrote a row per minute it changed, and the poll's reads of it
    -- are planned from its statistics.
    ANALYZE candle_changes;
END
$fn$;

-- TimescaleDB: hierarchical continuous aggregates (supported since 2.9), hours on top of
-- `one_min_candle` and days on top of hours, read through real-time aggregation like the
-- minutes. They name only `one_min_candle`'s columns, so whichever ticks a minute leaves out,
-- the hours and days leave out too. candlewick refreshes them after the minutes (see
-- `db::flavour`); the policies keep them fresh where TimescaleDB's scheduler runs.
DO $timescale$
BEGIN
    IF EXISTS (SELECT FROM candlewick_meta WHERE key = 'flavour' AND value = 'timescaledb') THEN
        EXECUTE $sql$
            CREATE MATERIALIZED VIEW one_hour_candle
            WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
            SELECT
                time_bucket('1 hour', bucket) AS bucket,
                symbol,
                first(open, bucket) AS open,
                max(high) AS high,
                min(low) AS low,
                last(close, bucket) AS close,
                sum(volume) AS volume,
                sum(trades)::bigint AS trades
            FROM one_min_candle
            GROUP BY time_bucket('1 hour', bucket), symbol
            WITH NO DATA
        $sql$;
        EXECUTE $sql$
            CREATE MATERIALIZED VIEW one_day_candle
            WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
            SELECT
                time_bucket('1 day', bucket) AS bucket,
                symbol,
                first(open, bucket) AS open,
                max(high) AS high,
                min(low) AS low,
                last(close, bucket) AS close,
                sum(volume) AS volume,
                sum(trades)::bigint AS trades
            FROM one_hour_candle
            GROUP BY time_bucket('1 day', bucket), symbol
            WITH NO DATA
        $sql$;
        -- Chunks for years of history (new chunks only; existing ones keep their size): a week
        -- of ticks, a month of minutes, a year of hours, ten years of days. A 1,000-bar page
        -- then reads one or two chunks at every level, and ten years are ~520 chunks of ticks
        -- instead of 3,650 to plan over.
        PERFORM set_chunk_time_interval('ticks', INTERVAL '7 days');
        PERFORM set_chunk_time_interval('one_min_candle', INTERVAL '30 days');
        PERFORM set_chunk_time_interval('one_hour_candle', INTERVAL '365 days');
        PERFORM set_chunk_time_interval('one_day_candle', INTERVAL '3650 days');
        PERFORM add_continuous_aggregate_policy('one_hour_candle',
            start_offset => NULL,
            end_offset => INTERVAL '1 hour',
            schedule_interval => INTERVAL '5 minutes');
        PERFORM add_continuous_aggregate_policy('one_day_candle',
            start_offset => NULL,
            end_offset => INTERVAL '1 day',
            schedule_interval => INTERVAL '1 hour');
    END IF;
END
$timescale$;

-- Where an aggregate's materialized rows are and where they end, for reads that page through
-- them in index order (through the real-time view the planner sorts every matching row): the
-- materialization hypertable and the watermark on TimescaleDB; no row on plain PostgreSQL.
CREATE FUNCTION candlewick_materialized(view_name TEXT)
RETURNS TABLE (relation TEXT, watermark TIMESTAMPTZ)
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    IF EXISTS (SELECT FROM candlewick_meta WHERE key = 'flavour' AND value = 'timescaledb') THEN
        RETURN QUERY EXECUTE $sql$
            SELECT format('%I.%I', h.schema_name, h.table_name),
                   _timescaledb_functions.to_timestamp(
                       _timescaledb_functions.cagg_watermark(c.mat_hypertable_id))
            FROM _timescaledb_catalog.continuous_agg c
            JOIN _timescaledb_catalog.hypertable h ON h.id = c.mat_hypertable_id
            WHERE c.user_view_name = $1
        $sql$ USING view_name;
    END IF;
END
$fn$;
