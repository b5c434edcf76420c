-- How long did external interrupts wait between being raised and being delivered?
-- Latency in virtual time (retired guest instructions) from the moment the vector became
-- pending (arg2/arg3 of the interrupt event) to its delivery through the IDT (the event's
-- vtime), per trace and vector, as a power-of-two histogram: [bucket_lo, bucket_hi),
-- with bucket 0 for interrupts delivered in the quantum they were raised in.
-- needs: events
WITH lat AS (
    SELECT
        trace,
        arg0 AS vector,
        vtime - (arg2::UBIGINT | (arg3::UBIGINT << 32)) AS latency
    FROM events
    WHERE kind = 'interrupt'
),
b AS (
    SELECT
        trace,
        vector,
        CASE WHEN latency = 0 THEN 0 ELSE floor(log2(latency))::INTEGER + 1 END AS bucket
    FROM lat
)
SELECT
    trace,
    vector,
    (CASE WHEN bucket = 0 THEN 0 ELSE 1::UBIGINT << (bucket - 1) END)::UBIGINT AS bucket_lo,
    (1::UBIGINT << bucket)::UBIGINT AS bucket_hi,
    count(*) AS interrupts,
    sum(count(*)) OVER (PARTITION BY trace, vector ORDER BY bucket)
        / sum(count(*)) OVER (PARTITION BY trace, vector) AS cumulative
FROM b
GROUP BY trace, vector, bucket
ORDER BY trace, vector, bucket;
