-- The outbox and the command table are queues: every row is inserted, updated once or twice
-- (claimed, published or finished) and deleted later, so dead tuples pile up as fast as
-- work flows. With the default threshold (20 % of the table) a burst of 100k events left
-- 200k dead outbox tuples unvacuumed for over a minute, and every claim meanwhile walked
-- ~550 index and heap pages of them instead of 5 (docs/performance.md). Vacuum them after
-- a fixed number of dead rows, without the cost-based pauses; analyze them as often, so
-- the planner keeps seeing a small PENDING set. (How soon autovacuum looks at a table is
-- the server's autovacuum_naptime: see docs/deploy-kubernetes.md.)
ALTER TABLE noetl.outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 5000
);
ALTER TABLE noetl.command SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 5000
);
