-- One id per catalog entry, for clients that name an entry by `catalog_id` (the upstream NoETL
-- API and CLI: docs/compatibility.md). (path, version) stays the key everything else uses.
ALTER TABLE noetl.catalog ADD COLUMN catalog_id bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE noetl.catalog ADD CONSTRAINT catalog_catalog_id_key UNIQUE (catalog_id);
