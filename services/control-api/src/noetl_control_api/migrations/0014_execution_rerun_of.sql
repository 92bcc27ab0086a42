-- A rerun from a step (POST /api/executions/{id}/rerun with from_step) names the execution it
-- restarts. No foreign key: retention may purge the earlier execution first, and the id still
-- says where the reused outcomes came from (they are recorded in the rerun's own events).
ALTER TABLE noetl.execution ADD COLUMN rerun_of bigint;
CREATE INDEX execution_rerun_of_idx ON noetl.execution (rerun_of) WHERE rerun_of IS NOT NULL;
