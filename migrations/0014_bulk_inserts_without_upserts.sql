-- Plain flavour: a bulk INSERT or COPY (an import) builds its minutes at the cost of writing them.
--
-- Every multi-row statement merged its minutes into `candlewick_candles` with
-- `INSERT … ON CONFLICT DO UPDATE`. For an import of history (one tick a minute, 1,008,000
-- ticks) the trigger took 4.9 s of the statement's 9.7 s:
--
-- * 1.3 s in `array_agg(price ORDER BY time)`, which sorts each minute's ticks apart: a sort set
--   up and torn down per minute and aggregate;
-- * 2.6 s in the upsert, where each row is a speculative insertion (a probe of the key, the
--   insertion, then a second WAL record to confirm it) whose conflict never comes: the
--   imported minutes had no candles.
--
-- Now the ticks are sorted once, by symbol, minute and time, in a subquery that the grouping
-- reads in that order: each minute's first row is its open, its last its close. PostgreSQL
-- keeps a sorted subquery's order for the aggregates above it when nothing but the grouping
-- lies in between (documented under "Aggregate Expressions"; a join could reorder it, and
-- there is none).
--
-- And a statement of at least 10,000 new ticks whose symbols have no candle between their first
-- and last tick (the common import: history loaded before or beside the live feed) inserts its
-- minutes plainly. A candle another writer adds meanwhile in one of those minutes makes that
-- INSERT fail on the key: it is rolled back (a subtransaction) and the minutes are merged as
-- before, so the result is the same.
--
-- The rest is 0007's text: UPDATE, DELETE, TRUNCATE, the one-row INSERT, the journal.
-- TimescaleDB is unchanged (its trigger only merges the live minutes, 0012).

DO $flavour$
BEGIN
    IF NOT EXISTS (SELECT FROM candlewick_meta WHERE key = 'flavour' AND value = 'postgresql') THEN
        RETURN;
    END IF;

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

        -- Bulk: minutes no candle holds yet are inserted, not merged (see the top).
        IF TG_OP = 'INSERT' AND (SELECT count(*) >= 10000 FROM new_rows) AND NOT EXISTS (
            SELECT FROM (
                SELECT symbol, min(time) AS first, max(time) AS last
                FROM new_rows
                WHERE time >= '0001-01-01 00:00:00+00' AND time < '10000-01-01 00:00:00+00'
                GROUP BY symbol
            ) AS s
            WHERE EXISTS (
                SELECT FROM candlewick_candles c
                WHERE c.symbol = s.symbol
                  AND c.bucket >= date_bin('1 minute', s.first, 'epoch')
                  AND c.bucket <= s.last
            )
        ) THEN
            BEGIN
                -- The statement below, without its ORDER BY (for the merge's row locks) and ON CONFLICT.
                WITH merged AS (
                    SELECT
                        symbol,
                        bucket,
                        (array_agg(price))[1] AS open,
                        max(price) AS high,
                        min(price) AS low,
                        (array_agg(price))[count(*)] AS close,
                        sum(volume) AS volume,
                        count(*) AS trades,
                        min(time) AS open_time,
                        max(time) AS close_time
                    FROM (
                        SELECT n.symbol, date_bin('1 minute', n.time, 'epoch') AS bucket,
                               n.time, n.price, n.volume
                        FROM new_rows n
                        WHERE n.time >= '0001-01-01 00:00:00+00' AND n.time < '10000-01-01 00:00:00+00'
                          AND (n.price IS NULL OR (n.price > '-Infinity' AND n.price < 'Infinity'))
                          AND (n.volume IS NULL OR (n.volume > '-Infinity' AND n.volume < 'Infinity'))
                          AND (symbols IS NULL
                               OR (n.symbol, date_bin('1 minute', n.time, 'epoch')) NOT IN (
                                   SELECT * FROM unnest(symbols, buckets)))
                        ORDER BY 1, 2, 3
                    ) AS sorted
                    GROUP BY 1, 2
                ),
                -- A bulk statement (an import: more minutes than a poll lists, see
                -- `MAX_CHANGES_PER_POLL` in src/db/journal.rs) is journaled by the hours it changed
                -- and one wholesale entry (NULL, as a TRUNCATE), as in 0007.
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
                FROM merged;
                RETURN NULL;
            EXCEPTION WHEN unique_violation THEN
                -- Another writer's candle in one of these minutes: merge them below.
            END;
        END IF;

        -- As in 0007 but for the sorted subquery.
        WITH merged AS (
            SELECT
                symbol,
                bucket,
                (array_agg(price))[1] AS open,
                max(price) AS high,
                min(price) AS low,
                (array_agg(price))[count(*)] AS close,
                sum(volume) AS volume,
                count(*) AS trades,
                min(time) AS open_time,
                max(time) AS close_time
            FROM (
                SELECT n.symbol, date_bin('1 minute', n.time, 'epoch') AS bucket,
                       n.time, n.price, n.volume
                FROM new_rows n
                WHERE n.time >= '0001-01-01 00:00:00+00' AND n.time < '10000-01-01 00:00:00+00'
                  AND (n.price IS NULL OR (n.price > '-Infinity' AND n.price < 'Infinity'))
                  AND (n.volume IS NULL OR (n.volume > '-Infinity' AND n.volume < 'Infinity'))
                  AND (symbols IS NULL
                       OR (n.symbol, date_bin('1 minute', n.time, 'epoch')) NOT IN (
                           SELECT * FROM unnest(symbols, buckets)))
                ORDER BY 1, 2, 3
            ) AS sorted
            GROUP BY 1, 2
        ),
        -- A bulk statement (an import: more minutes than a poll lists, see
        -- `MAX_CHANGES_PER_POLL` in src/db/journal.rs) is journaled by the hours it changed
        -- and one wholesale entry (NULL, as a TRUNCATE), as in 0007.
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
    $fn$;
END
$flavour$;
