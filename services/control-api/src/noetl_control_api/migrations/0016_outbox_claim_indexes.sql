-- The claim walked one partial index of every unpublished row, PENDING and IN_FLIGHT alike,
-- in outbox_id order. Rows published and not yet marked (up to two batches while the
-- publisher streams, or the last 50 ms of a trickle) are IN_FLIGHT with a fresh lock, so
-- every claim stepped over all of them, each with a heap visit to read its locked_at: the
-- claim was the most expensive statement per step of a chain (docs/performance.md).
-- Pending rows and in-flight rows now have an index each: the claim reads the oldest due
-- pending rows from the first, and from the second only in-flight rows whose lease expired
-- (none, unless a publisher died), by locked_at.
CREATE INDEX outbox_pending_idx ON noetl.outbox (outbox_id) WHERE status = 'PENDING';
CREATE INDEX outbox_in_flight_idx ON noetl.outbox (locked_at) WHERE status = 'IN_FLIGHT';
DROP INDEX IF EXISTS noetl.outbox_claimable_idx;
