-- The retention sweep deletes published rows by age; only published rows enter this index.
CREATE INDEX outbox_published_idx ON noetl.outbox (published_at) WHERE status = 'PUBLISHED';
