-- Every outbox row is written three times (inserted, claimed, marked published), and each
-- write changes `status`, so none is a HOT update: each new row version enters every index of
-- the table. The plain index on `status` served no query the partial claimable index
-- (status IN ('PENDING', 'IN_FLIGHT'), ordered by outbox_id) does not serve as well: the
-- claim and the pending count read that one, retention and the sweeper go by
-- (execution_id, event_id). Dropping it saves an index entry per row version, 24 per step
-- of a chain (docs/performance.md#cpu-per-step).
DROP INDEX IF EXISTS noetl.outbox_status_idx;
