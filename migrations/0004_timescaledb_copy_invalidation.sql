-- TimescaleDB 2.27 logs no continuous-aggregate invalidation for COPY into a hypertable that has
-- transition-table triggers (ours), so a bulk load into already-materialized minutes stayed
-- invisible in `one_min_candle` even after a refresh. Rows inserted below the aggregate's
-- watermark are now rewritten in place by an UPDATE, which does log the invalidation, so the
-- next refresh (the poller's or the policy's) picks them up. Live inserts, above the watermark,
-- pay nothing.
DO $migration$
BEGIN
    IF (SELECT value FROM candlewick_meta WHERE key = 'flavour') = 'timescaledb' THEN
        CREATE OR REPLACE FUNCTION candlewick_ticks_changed() RETURNS trigger
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
    END IF;
END
$migration$;
