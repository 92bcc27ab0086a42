-- The orchestrator's state is written whole on every outcome and read whole (as text) under
-- the execution lock; no query looks inside it except the status view's `state->'ctx'` and
-- `state->'results'`, which json answers too. As jsonb every write parsed it into a tree and
-- compressed it (pglz) and every locked read serialised the tree back to text: for the
-- 26 KB state of a 1,000-item loop in progress, lock + read + write took ~3 ms of server
-- time against ~0.5 ms as json stored uncompressed (docs/performance.md). json keeps the
-- text as written (checked for syntax only); EXTERNAL storage moves a large value out of
-- line without compressing it (states take about twice the space on disk).
ALTER TABLE noetl.execution ALTER COLUMN state TYPE json USING state::json;
ALTER TABLE noetl.execution ALTER COLUMN state SET STORAGE EXTERNAL;
