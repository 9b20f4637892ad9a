-- Recompute changed minutes with one index probe per minute. The join in 0002 let the planner
-- pick a hash join that scanned all of `ticks` once a statement touched a few dozen minutes
-- (1,000 rows over 51 minutes into a 1M-row table took seconds). A LATERAL aggregate per key
-- keeps the cost proportional to the ticks in the changed minutes.
DO $migration$
BEGIN
    IF (SELECT value FROM candlewick_meta WHERE key = 'flavour') = 'postgresql' THEN
        CREATE OR REPLACE FUNCTION candlewick_recompute_minutes(symbols TEXT[], buckets TIMESTAMPTZ[])
        RETURNS void LANGUAGE plpgsql AS $fn$
        BEGIN
            PERFORM pg_advisory_xact_lock(1129796427, slot)
            FROM (
                SELECT DISTINCT (hashtext(s) # (extract(epoch FROM b) / 60)::int) & 255 AS slot
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
    END IF;
END
$migration$;
