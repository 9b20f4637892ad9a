-- The advisory-lock slot of a minute cast minutes since the epoch to int4, which overflows for
-- years past 6053 (and so refused such ticks with "integer out of range"). Same function as in
-- 0003, with the slot computed in bigint.
DO $migration$
BEGIN
    IF (SELECT value FROM candlewick_meta WHERE key = 'flavour') = 'postgresql' THEN
        CREATE OR REPLACE FUNCTION candlewick_recompute_minutes(symbols TEXT[], buckets TIMESTAMPTZ[])
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
    END IF;
END
$migration$;
