-- One definition of a minute's candle from its ticks: open/close = price of the earliest/latest
-- tick (and those ticks' times), high/low = max/min price, volume = sum, trades = count. The
-- plain flavour's trigger recomputes minutes with it, and the poll on TimescaleDB reads edited
-- materialized minutes with it. A one-row set-returning SQL function, so the planner inlines it into the caller's
-- query: each use stays an index probe of `ticks_symbol_time`.
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
$fn$;

DO $plain$
BEGIN
    IF EXISTS (SELECT FROM candlewick_meta WHERE key = 'flavour' AND value = 'postgresql') THEN
        EXECUTE $sql$
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
            CROSS JOIN LATERAL candlewick_minute_candle(k.symbol, k.bucket) AS a
            WHERE a.trades > 0
            ON CONFLICT (symbol, bucket) DO UPDATE SET
                open = excluded.open,
                high = excluded.high,
                low = excluded.low,
                close = excluded.close,
                volume = excluded.volume,
                trades = excluded.trades;
        END
        $fn$
        $sql$;
    END IF;
END
$plain$;
