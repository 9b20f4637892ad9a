-- TimescaleDB: a page of candles read from the continuous aggregates' index alone.
--
-- A page of 1m, 1h or 1d candles (and the 5m, 15m and 4h ones rolled up from them) reads the
-- materialized rows of `one_min_candle`, `one_hour_candle` or `one_day_candle` newest first by
-- (symbol, bucket), straight from their hypertables (`db::candles`). A refresh writes those rows
-- in the order its aggregation hashed them, so the rows of one symbol's consecutive minutes lie
-- on as many heap pages: a 15m page (15,015 minutes) visited ~15,000 buffers and took 13 ms in
-- the executor after three years were imported, where plain PostgreSQL, whose minutes lie in
-- the order they were written, took 3 ms.
--
-- An index that holds the candle's columns answers such a page from its leaf pages, in order
-- (an index-only scan: 145 buffers and 3 ms for the same page), once VACUUM has marked the heap
-- pages all-visible: a bulk load vacuums the chunks it materialized before it reports done
-- (`db::flavour::after_load`), autovacuum the rest; a page not marked yet is read from the heap
-- as before. It replaces the (symbol, bucket DESC) index TimescaleDB made for the aggregate's
-- GROUP BY columns, which it covers (a btree is read both ways), so a refresh keeps as many
-- indexes up to date as before.
--
-- Plain PostgreSQL is unchanged: every tick updates its minute's row in place, and an index
-- holding the prices would turn those heap-only updates into index writes.

DO $flavour$
DECLARE
    aggregate TEXT;
    group_index TEXT;
BEGIN
    IF NOT EXISTS (SELECT FROM candlewick_meta WHERE key = 'flavour' AND value = 'timescaledb') THEN
        RETURN;
    END IF;
    FOREACH aggregate IN ARRAY ARRAY['one_min_candle', 'one_hour_candle', 'one_day_candle'] LOOP
        SELECT format('%I.%I', n.nspname, i.relname) INTO group_index
        FROM timescaledb_information.continuous_aggregates c
        JOIN pg_namespace hn ON hn.nspname = c.materialization_hypertable_schema
        JOIN pg_class h ON h.relnamespace = hn.oid AND h.relname = c.materialization_hypertable_name
        JOIN pg_index x ON x.indrelid = h.oid
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_namespace n ON n.oid = i.relnamespace
        WHERE c.view_name = aggregate
          AND x.indnatts = 2
          AND ARRAY(
                  SELECT a.attname::text
                  FROM unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, position)
                  JOIN pg_attribute a ON a.attrelid = h.oid AND a.attnum = k.attnum
                  ORDER BY k.position
              ) = ARRAY['symbol', 'bucket'];
        EXECUTE format(
            'CREATE INDEX %I ON %I (symbol, bucket) INCLUDE (open, high, low, close, volume)',
            aggregate || '_page',
            aggregate
        );
        IF group_index IS NOT NULL THEN
            EXECUTE 'DROP INDEX ' || group_index;
        END IF;
    END LOOP;
END
$flavour$;
