-- TimescaleDB: a COPY below the watermark invalidates what it wrote by rewriting two rows a chunk.
--
-- TimescaleDB logs no continuous-aggregate invalidation for a COPY into `ticks` (migration
-- 0004), so the insert trigger rewrote in place, by an UPDATE, every row a COPY put below the
-- aggregate's watermark. An UPDATE logs its invalidation, but per chunk as one range, the
-- lowest and the greatest time the transaction changed in it, written once when it commits:
-- the rows in between add nothing. Loading a year of history into a database whose feed had
-- moved the watermark to the present rewrote all of it, with the UPDATE trigger's work on top
-- (an import of 525,600 ticks took 21.6 s, 12.0 s where the watermark was still at its start).
--
-- Now only the rows at each chunk's oldest and newest loaded time are rewritten (other rows
-- at those times too, harmlessly): the same ranges are invalidated, and the next refresh over
-- them recomputes everything in between, as before. The rest of the function is 0012's text.
-- Plain PostgreSQL is unchanged.

DO $flavour$
BEGIN
    IF NOT EXISTS (SELECT FROM candlewick_meta WHERE key = 'flavour' AND value = 'timescaledb') THEN
        RETURN;
    END IF;

    CREATE OR REPLACE FUNCTION candlewick_ticks_changed() RETURNS trigger
    LANGUAGE plpgsql AS $fn$
    DECLARE
        watermark TIMESTAMPTZ;
        chunk_starts TIMESTAMPTZ[];
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
            -- In each chunk, the rows at its oldest and its newest such time (chunks are told
            -- apart by the start of their range; they never overlap).
            chunk_starts := ARRAY(
                SELECT range_start FROM timescaledb_information.chunks
                WHERE hypertable_schema = TG_TABLE_SCHEMA AND hypertable_name = TG_TABLE_NAME
                ORDER BY range_start
            );
            UPDATE ticks t
            SET price = t.price
            FROM (
                SELECT min(time) AS oldest, max(time) AS newest
                FROM new_rows
                WHERE time < watermark
                GROUP BY width_bucket(time, chunk_starts)
            ) AS c
            WHERE t.time = c.oldest OR t.time = c.newest;
        END IF;
        RETURN NULL;
    END
    $fn$;
END
$flavour$;
