-- WASM plug-in registry (ARCHITECTURE §8): one row per (path, version); digest = sha256 hex,
-- served as the ETag. Re-publishing a version replaces its bytes and digest.
CREATE TABLE noetl.plugin_module (
    path        text        NOT NULL,
    version     integer     NOT NULL CHECK (version >= 1),
    digest      text        NOT NULL,
    media_type  text        NOT NULL DEFAULT 'application/wasm',
    bytes       bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (path, version)
);

-- Object store for plug-in outputs (object_put / result_put intents).
CREATE TABLE noetl.object (
    key         text        PRIMARY KEY,
    media_type  text        NOT NULL DEFAULT 'application/octet-stream',
    digest      text        NOT NULL,
    bytes       bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
