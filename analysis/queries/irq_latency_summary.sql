-- What are the typical and worst interrupt latencies, per vector?
-- Per trace and vector: interrupts delivered, and latency (retired guest instructions from
-- raise to delivery) as min, mean, median, 90th and 99th percentile (linear interpolation)
-- and max.
-- needs: events
WITH lat AS (
    SELECT
        trace,
        arg0 AS vector,
        vtime - (arg2::UBIGINT | (arg3::UBIGINT << 32)) AS latency
    FROM events
    WHERE kind = 'interrupt'
)
SELECT
    trace,
    vector,
    count(*) AS interrupts,
    min(latency) AS min,
    avg(latency) AS mean,
    quantile_cont(latency, 0.5) AS p50,
    quantile_cont(latency, 0.9) AS p90,
    quantile_cont(latency, 0.99) AS p99,
    max(latency) AS max
FROM lat
GROUP BY trace, vector
ORDER BY trace, vector;
