-- An outbox payload is written once, as the JSON text the recorder encoded, and read back
-- whole by the claim, for the publisher to send as it is; nothing looks inside it except a
-- dead row's event type and step (`->>`, which json answers too). As jsonb, every insert
-- parsed the text into a tree and every claim serialised the tree back to text, which the
-- control-api then parsed into objects and encoded again. As json the column keeps the text
-- as written (checked for syntax only), and the claim hands it to the reply untouched
-- (docs/performance.md). Rewrites the table once: a deployment upgrades with the outbox
-- drained or small (published rows are purged by retention).
ALTER TABLE noetl.outbox ALTER COLUMN payload TYPE json USING payload::json;
ALTER TABLE noetl.outbox ALTER COLUMN payload SET STATISTICS 0;
