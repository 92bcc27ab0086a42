-- The sweeper (docs/sweeper.md): what it needs to find stranded commands and executions past
-- their deadline, and to run scheduled jobs once across replicas.

-- A command's latest notification: when it was written and its outbox key (the row's
-- event_id; NULL = the command_id, the row written with the command). A re-published
-- notification is a new row with a fresh key, so JetStream does not drop it as a duplicate;
-- `republished` counts them (the wait before the next one doubles with each).
ALTER TABLE noetl.command ADD COLUMN notified_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE noetl.command ADD COLUMN notice_id bigint;
ALTER TABLE noetl.command ADD COLUMN republished integer NOT NULL DEFAULT 0;

-- created_at + the playbook's `timeout`; NULL: no deadline. Only running ones are looked at.
ALTER TABLE noetl.execution ADD COLUMN deadline_at timestamptz;
CREATE INDEX execution_deadline_idx ON noetl.execution (deadline_at)
    WHERE status = 'RUNNING' AND deadline_at IS NOT NULL;

-- Purging an execution deletes the objects its plug-ins wrote (`executions/<id>/...`): a range
-- scan in byte order, whatever the database's collation.
CREATE INDEX object_key_bytes_idx ON noetl.object (key COLLATE "C");

-- When each scheduled job (the retention policy) last ran; a replica takes a run with a
-- conditional update, so a job runs once per interval however many replicas sweep.
CREATE TABLE noetl.sweep_schedule (
    name        text        PRIMARY KEY,
    last_run_at timestamptz NOT NULL
);
