-- Authentication and lease ownership (docs/security.md).
-- API tokens are stored only as sha256(token): the clear token is shown once, at creation.
CREATE TABLE noetl.api_token (
    token_id     bigint      PRIMARY KEY,
    name         text        NOT NULL,
    role         text        NOT NULL
        CHECK (role IN ('viewer', 'operator', 'developer', 'admin', 'worker', 'publisher', 'projector')),
    pool         text,
    token_hash   bytea       NOT NULL UNIQUE,
    created_by   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CHECK ((role = 'worker') = (pool IS NOT NULL))
);
-- a name is unique among live tokens; a revoked token keeps its row (who, when) for audit
CREATE UNIQUE INDEX api_token_live_name ON noetl.api_token (name) WHERE revoked_at IS NULL;

-- the principal (token name) that holds a command's lease: events, credential resolution and
-- result uploads for the command are accepted from it only
ALTER TABLE noetl.command ADD COLUMN claimed_by text;

-- playbook path prefixes allowed to use a credential or keychain entry; NULL = every path
-- outside system/
ALTER TABLE noetl.credential ADD COLUMN allowed_paths text[];
ALTER TABLE noetl.keychain ADD COLUMN allowed_paths text[];
