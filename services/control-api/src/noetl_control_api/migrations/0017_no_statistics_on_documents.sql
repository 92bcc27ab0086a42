-- ANALYZE of a queue table computes statistics for every column of a 30,000-row sample.
-- For the JSON documents (payloads, contexts, specs, states) that means detoasting and
-- comparing each sampled value, and no query filters, joins or sorts on them: the outbox's
-- ANALYZE, which runs every 5,000 changes (migration 0008), took 0.35-0.47 s of CPU
-- every few seconds of a 100,000-event pipeline, and the event table's 0.12-0.21 s; together
-- 7 % of the whole stack's CPU (docs/performance.md). A statistics target of 0 leaves these
-- columns out of ANALYZE; the planner keeps its defaults for them, which no plan needs.
ALTER TABLE noetl.outbox ALTER COLUMN payload SET STATISTICS 0, ALTER COLUMN last_error SET STATISTICS 0;
ALTER TABLE noetl.event ALTER COLUMN context SET STATISTICS 0, ALTER COLUMN meta SET STATISTICS 0;
ALTER TABLE noetl.command ALTER COLUMN spec SET STATISTICS 0, ALTER COLUMN meta SET STATISTICS 0;
ALTER TABLE noetl.execution
    ALTER COLUMN payload SET STATISTICS 0,
    ALTER COLUMN state SET STATISTICS 0,
    ALTER COLUMN result SET STATISTICS 0,
    ALTER COLUMN error SET STATISTICS 0;
ALTER TABLE noetl.step_log ALTER COLUMN text SET STATISTICS 0;
