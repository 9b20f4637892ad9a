-- One set of names on two storage flavours. With TimescaleDB available (and preloaded),
-- `ticks` becomes a hypertable and `one_min_candle` a continuous aggregate with real-time
-- aggregation; elsewhere `one_min_candle` is a table kept equal to that aggregate by triggers,
-- in the same transaction as every write to `ticks`.
--
-- Both flavours journal changed minutes through statement-level triggers with transition tables
-- (they work on hypertables too). PostgreSQL allows only one event per trigger that has
-- transition tables, hence three triggers on one function.

CREATE TABLE candlewick_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

DO $flavour$
BEGIN
    -- Installed but not preloaded, CREATE EXTENSION ends the connection (FATAL, which no
    -- handler catches): the preload setting is checked first.
    IF EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb')
       AND position('timescaledb' IN current_setting('shared_preload_libraries')) > 0 THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
        EXCEPTION WHEN OTHERS THEN
            -- Not permitted (no superuser), or another failure: plain flavour.
            RAISE NOTICE 'timescaledb is available but cannot be created (%): using plain PostgreSQL', SQLERRM;
        END;
    ELSIF EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        RAISE NOTICE 'timescaledb is installed but not in shared_preload_libraries: using plain PostgreSQL';
    END IF;

    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM create_hypertable('ticks', by_range('time', INTERVAL '1 day'), migrate_data => true);
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
            GROUP BY bucket, symbol
            WITH NO DATA
        $sql$;
        PERFORM add_continuous_aggregate_policy('one_min_candle',
            start_offset => NULL,
            end_offset => INTERVAL '1 minute',
            schedule_interval => INTERVAL '1 minute');
        INSERT INTO candlewick_meta VALUES ('flavour', 'timescaledb');

        -- TimescaleDB 2.27 logs no continuous-aggregate invalidation for COPY into a hypertable
        -- that has transition-table triggers (ours), so rows a bulk load puts below the
        -- aggregate's watermark are rewritten in place by an UPDATE, which does log it; the next
        -- refresh then picks them up. Live inserts, above the watermark, pay nothing.
        CREATE FUNCTION candlewick_ticks_changed() RETURNS trigger
        LANGUAGE plpgsql AS $fn$
        DECLARE
            watermark TIMESTAMPTZ;
        BEGIN
            IF TG_OP = 'TRUNCATE' THEN
                INSERT INTO candle_changes (symbol, bucket) VALUES (NULL, NULL);
            ELSIF TG_OP = 'INSERT' THEN
                INSERT INTO candle_changes (symbol, bucket)
                SELECT DISTINCT symbol, date_bin('1 minute', time, 'epoch') FROM new_rows;
                IF pg_trigger_depth() = 1 THEN
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
        $fn$;
    ELSE
        CREATE TABLE one_min_candle (
            bucket TIMESTAMPTZ NOT NULL,
            symbol TEXT NOT NULL,
            open DOUBLE PRECISION,
            high DOUBLE PRECISION,
            low DOUBLE PRECISION,
            close DOUBLE PRECISION,
            volume DOUBLE PRECISION,
            trades BIGINT NOT NULL,
            PRIMARY KEY (symbol, bucket)
        );
        CREATE INDEX one_min_candle_bucket ON one_min_candle (bucket DESC);
        INSERT INTO candlewick_meta VALUES ('flavour', 'postgresql');

        -- Recomputes the given minutes from `ticks`. Writers of the same minutes are serialized
        -- by a transaction-scoped advisory lock taken first; the recomputation then runs as new
        -- statements, whose fresh snapshots (READ COMMITTED) see what the previous holder
        -- committed. Under REPEATABLE READ a conflicting writer gets a serialization failure
        -- from the upsert instead of writing a stale candle. 256 lock slots bound the lock-table
        -- use of a bulk load that touches many minutes (the slot is computed in bigint: minutes
        -- since the epoch overflow int4 past year 6053). Each minute is recomputed by its own
        -- LATERAL index probe: a plain join let the planner scan all of `ticks` once a statement
        -- touched a few dozen minutes.
        CREATE FUNCTION candlewick_recompute_minutes(symbols TEXT[], buckets TIMESTAMPTZ[])
        RETURNS void LANGUAGE plpgsql AS $fn$
        BEGIN
            PERFORM pg_advisory_xact_lock(1129796427, slot)
            FROM (
                SELECT DISTINCT ((hashtext(s)::bigint # floor(extract(epoch FROM b) / 60)::bigint) & 255)::int AS slot
                FROM unnest(symbols, buckets) AS k(s, b)
                ORDER BY 1
            ) AS slots;

            DELETE FROM one_min_candle c
            USING unnest(symbols, buckets) AS k(symbol, bucket)
            WHERE c.symbol = k.symbol
              AND c.bucket = k.bucket
              AND NOT EXISTS (
                  SELECT FROM ticks t
                  WHERE t.symbol = k.symbol
                    AND t.time >= k.bucket
                    AND t.time < k.bucket + INTERVAL '1 minute');

            INSERT INTO one_min_candle (bucket, symbol, open, high, low, close, volume, trades)
            SELECT k.bucket, k.symbol, a.open, a.high, a.low, a.close, a.volume, a.trades
            FROM unnest(symbols, buckets) AS k(symbol, bucket)
            CROSS JOIN LATERAL (
                SELECT
                    (array_agg(t.price ORDER BY t.time))[1] AS open,
                    max(t.price) AS high,
                    min(t.price) AS low,
                    (array_agg(t.price ORDER BY t.time DESC))[1] AS close,
                    sum(t.volume) AS volume,
                    count(*) AS trades
                FROM ticks t
                WHERE t.symbol = k.symbol
                  AND t.time >= k.bucket
                  AND t.time < k.bucket + INTERVAL '1 minute'
            ) AS a
            WHERE a.trades > 0
            ON CONFLICT (symbol, bucket) DO UPDATE SET
                open = excluded.open,
                high = excluded.high,
                low = excluded.low,
                close = excluded.close,
                volume = excluded.volume,
                trades = excluded.trades;
        END
        $fn$;

        CREATE FUNCTION candlewick_ticks_changed() RETURNS trigger
        LANGUAGE plpgsql AS $fn$
        DECLARE
            symbols TEXT[];
            buckets TIMESTAMPTZ[];
        BEGIN
            IF TG_OP = 'TRUNCATE' THEN
                DELETE FROM one_min_candle;
                INSERT INTO candle_changes (symbol, bucket) VALUES (NULL, NULL);
                RETURN NULL;
            ELSIF TG_OP = 'INSERT' THEN
                SELECT array_agg(symbol), array_agg(bucket) INTO symbols, buckets
                FROM (SELECT DISTINCT symbol, date_bin('1 minute', time, 'epoch') AS bucket FROM new_rows) AS k;
            ELSIF TG_OP = 'DELETE' THEN
                SELECT array_agg(symbol), array_agg(bucket) INTO symbols, buckets
                FROM (SELECT DISTINCT symbol, date_bin('1 minute', time, 'epoch') AS bucket FROM old_rows) AS k;
            ELSE
                SELECT array_agg(symbol), array_agg(bucket) INTO symbols, buckets
                FROM (
                    SELECT symbol, date_bin('1 minute', time, 'epoch') AS bucket FROM old_rows
                    UNION
                    SELECT symbol, date_bin('1 minute', time, 'epoch') FROM new_rows
                ) AS k;
            END IF;
            IF symbols IS NULL THEN
                RETURN NULL;
            END IF;
            INSERT INTO candle_changes (symbol, bucket) SELECT * FROM unnest(symbols, buckets);
            PERFORM candlewick_recompute_minutes(symbols, buckets);
            RETURN NULL;
        END
        $fn$;
    END IF;
END
$flavour$;

CREATE TRIGGER ticks_journal_insert AFTER INSERT ON ticks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION candlewick_ticks_changed();
CREATE TRIGGER ticks_journal_update AFTER UPDATE ON ticks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION candlewick_ticks_changed();
CREATE TRIGGER ticks_journal_delete AFTER DELETE ON ticks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION candlewick_ticks_changed();
CREATE TRIGGER ticks_journal_truncate AFTER TRUNCATE ON ticks
    FOR EACH STATEMENT EXECUTE FUNCTION candlewick_ticks_changed();
