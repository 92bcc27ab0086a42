-- Credentials, keychain and the result store (ARCHITECTURE §5.6, DSL "credentials").
-- Secret data is stored only encrypted (Fernet, key NOETL_CREDENTIALS_KEY); the clear value
-- never reaches a column.

CREATE TABLE noetl.credential (
    name            text        PRIMARY KEY,
    credential_type text        NOT NULL,
    description     text,
    data_enc        bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- scope_id 0 = global; otherwise the execution the entry belongs to (it wins over global).
CREATE TABLE noetl.keychain (
    scope_id    bigint      NOT NULL DEFAULT 0,
    name        text        NOT NULL,
    description text,
    value_enc   bytea       NOT NULL,
    expires_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope_id, name)
);

CREATE TABLE noetl.result_store (
    key          text        PRIMARY KEY,
    execution_id bigint      NOT NULL,
    media_type   text        NOT NULL,
    size         bigint      NOT NULL,
    data         bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX result_store_execution_idx ON noetl.result_store (execution_id);
