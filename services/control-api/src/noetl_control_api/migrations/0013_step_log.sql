-- Step logs: what a step's python tasks printed and logged, sent by the worker beside the
-- command's terminal events and written in the same transaction, under the execution's row
-- lock. `seq` is taken under that lock too, so an execution's rows commit in `seq` order and
-- a reader following with `after = the last seq seen` misses none (docs/decisions.md).
CREATE TABLE noetl.step_log (
    execution_id bigint      NOT NULL,
    seq          bigint      GENERATED ALWAYS AS IDENTITY,
    command_id   bigint      NOT NULL,
    step         text        NOT NULL,
    attempt      integer     NOT NULL,
    stream       text        NOT NULL CHECK (stream IN ('stdout', 'stderr', 'log')),
    level        text,
    at           timestamptz NOT NULL,
    text         text        NOT NULL,
    -- the marker line of output dropped past the worker's bound
    truncated    boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (execution_id, seq)
);
CREATE INDEX step_log_step_idx ON noetl.step_log (execution_id, step, seq);
-- the reply's `truncated` flag: a lookup among the few marker lines, not a scan of all
CREATE INDEX step_log_truncated_idx ON noetl.step_log (execution_id, step) WHERE truncated;
