-- NOTIFY noetl_execution_done (payload: the execution id) whenever an execution leaves RUNNING,
-- in the transaction that changes its status: completion, failure, cancel, a child's end, any
-- path that updates the row. Wakes `GET /api/executions/{id}?wait=` on every control-api
-- replica exactly at commit. (An execution inserted already terminal needs none: a waiter
-- reads the row after it registers, so it sees that status itself.)
CREATE FUNCTION noetl.notify_execution_done() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('noetl_execution_done', NEW.execution_id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER execution_done_notify
    AFTER UPDATE OF status ON noetl.execution
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status <> 'RUNNING')
    EXECUTE FUNCTION noetl.notify_execution_done();
