-- Plain flavour: the hour and day pages read the stored rows in index order again.
--
-- Since 0009 `one_hour_candle` / `one_day_candle` are the stored rows but the pending ones,
-- plus the pending buckets folded from their minutes at read time. PostgreSQL does not read
-- the two halves of such a view in order: a page of the newest 1,000 hours of a symbol with
-- ten years stored scanned and sorted all 87,600 of them. The server's reads now take the two
-- halves apart (src/db/candles.rs): the stored rows but the pending ones, by the index, newest
-- first, up to the page's size; and the pending buckets, a handful, from the functions below.
-- The views are the same union, written with the same functions, so that both read the same.
--
-- TimescaleDB: nothing changes (hierarchical continuous aggregates, 0008).

DO $flavour$
BEGIN
    IF EXISTS (SELECT FROM candlewick_meta WHERE key = 'flavour' AND value = 'postgresql') THEN
        -- Each pending hour (of `candlewick_pending_hours()`) folded from its minutes; a
        -- pending hour with no minute left has no row. PL/pgSQL, as the pending sets: the
        -- planner takes the result as the handful of rows it is.
        CREATE FUNCTION candlewick_pending_hour_candles()
        RETURNS TABLE (bucket TIMESTAMPTZ, symbol TEXT, open DOUBLE PRECISION,
                       high DOUBLE PRECISION, low DOUBLE PRECISION, close DOUBLE PRECISION,
                       volume DOUBLE PRECISION, trades BIGINT)
        LANGUAGE plpgsql STABLE ROWS 10 AS $fn$
        BEGIN
            RETURN QUERY
                SELECT p.bucket, p.symbol, a.open, a.high, a.low, a.close, a.volume, a.trades
                FROM candlewick_pending_hours() p
                CROSS JOIN LATERAL (
                    SELECT
                        (array_agg(f.open ORDER BY f.open_time))[1] AS open,
                        max(f.high) AS high,
                        min(f.low) AS low,
                        (array_agg(f.close ORDER BY f.close_time DESC))[1] AS close,
                        sum(f.volume) AS volume,
                        sum(f.trades)::bigint AS trades
                    FROM candlewick_candles f
                    WHERE f.symbol = p.symbol
                      AND f.bucket >= p.bucket
                      AND f.bucket < p.bucket + INTERVAL '1 hour'
                ) AS a
                WHERE a.trades IS NOT NULL;
        END
        $fn$;

        CREATE FUNCTION candlewick_pending_day_candles()
        RETURNS TABLE (bucket TIMESTAMPTZ, symbol TEXT, open DOUBLE PRECISION,
                       high DOUBLE PRECISION, low DOUBLE PRECISION, close DOUBLE PRECISION,
                       volume DOUBLE PRECISION, trades BIGINT)
        LANGUAGE plpgsql STABLE ROWS 5 AS $fn$
        BEGIN
            RETURN QUERY
                SELECT p.bucket, p.symbol, a.open, a.high, a.low, a.close, a.volume, a.trades
                FROM candlewick_pending_days() p
                CROSS JOIN LATERAL (
                    SELECT
                        (array_agg(f.open ORDER BY f.open_time))[1] AS open,
                        max(f.high) AS high,
                        min(f.low) AS low,
                        (array_agg(f.close ORDER BY f.close_time DESC))[1] AS close,
                        sum(f.volume) AS volume,
                        sum(f.trades)::bigint AS trades
                    FROM candlewick_candles f
                    WHERE f.symbol = p.symbol
                      AND f.bucket >= p.bucket
                      AND f.bucket < p.bucket + INTERVAL '24 hours'
                ) AS a
                WHERE a.trades IS NOT NULL;
        END
        $fn$;

        CREATE OR REPLACE VIEW one_hour_candle AS
            SELECT h.bucket, h.symbol, h.open, h.high, h.low, h.close, h.volume, h.trades
            FROM candlewick_hour_candles h
            WHERE (h.symbol, h.bucket) NOT IN (SELECT p.symbol, p.bucket FROM candlewick_pending_hours() p)
            UNION ALL
            SELECT c.bucket, c.symbol, c.open, c.high, c.low, c.close, c.volume, c.trades
            FROM candlewick_pending_hour_candles() c;
        CREATE OR REPLACE VIEW one_day_candle AS
            SELECT d.bucket, d.symbol, d.open, d.high, d.low, d.close, d.volume, d.trades
            FROM candlewick_day_candles d
            WHERE (d.symbol, d.bucket) NOT IN (SELECT p.symbol, p.bucket FROM candlewick_pending_days() p)
            UNION ALL
            SELECT c.bucket, c.symbol, c.open, c.high, c.low, c.close, c.volume, c.trades
            FROM candlewick_pending_day_candles() c;
    END IF;
END
$flavour$;
