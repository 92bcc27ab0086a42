-- Event ids are unique within an execution, not across executions: two processes minting with
-- one Snowflake node id in one millisecond (a node lease that lapsed while its holder minted on,
-- a node id reused across clocks that disagree, explicit node ids) make the same id for two
-- executions, and the outbox already accepts that (unique (execution_id, event_id)). Keyed by
-- event_id alone, the read model kept the first such event and counted the second a
-- duplicate: an event of another execution was lost. Key it as the outbox does.
-- (docs/architecture.md#3-identifiers)
CREATE UNIQUE INDEX event_execution_event_key ON noetl.event (execution_id, event_id);
ALTER TABLE noetl.event DROP CONSTRAINT event_pkey;
ALTER TABLE noetl.event ADD CONSTRAINT event_pkey PRIMARY KEY USING INDEX event_execution_event_key;
-- the primary key is that index now
DROP INDEX noetl.event_execution_idx;
