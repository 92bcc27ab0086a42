-- Write model (catalog, execution, command, outbox), read model (event) and the worker registry.

CREATE TABLE noetl.catalog (
    path        text        NOT NULL,
    version     integer     NOT NULL CHECK (version > 0),
    name        text        NOT NULL,
    content     text        NOT NULL,
    -- lets a re-registration of identical content return the existing version without a scan of content
    content_sha256 text     NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (path, version)
);

CREATE TABLE noetl.execution (
    execution_id        bigint      PRIMARY KEY,
    path                text        NOT NULL,
    version             integer     NOT NULL,
    status              text        NOT NULL
        CHECK (status IN ('RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    payload             jsonb       NOT NULL DEFAULT '{}'::jsonb,
    state               jsonb,
    result              jsonb,
    error               text,
    parent_execution_id bigint,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (path, version) REFERENCES noetl.catalog (path, version)
);
-- GET /api/executions filters by status or path, newest (largest snowflake) first
CREATE INDEX execution_status_idx ON noetl.execution (status, execution_id DESC);
CREATE INDEX execution_path_idx ON noetl.execution (path, execution_id DESC);
CREATE INDEX execution_parent_idx ON noetl.execution (parent_execution_id)
    WHERE parent_execution_id IS NOT NULL;

CREATE TABLE noetl.command (
    command_id       bigint      PRIMARY KEY,
    event_id         bigint      NOT NULL UNIQUE,  -- the command.issued event id: the claim key
    execution_id     bigint      NOT NULL REFERENCES noetl.execution (execution_id),
    step             text        NOT NULL,
    pool             text        NOT NULL,
    tool_kind        text        NOT NULL,
    spec             jsonb       NOT NULL,
    meta             jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status           text        NOT NULL DEFAULT 'PENDING'
        CHECK (status IN ('PENDING', 'CLAIMED', 'COMPLETED', 'FAILED', 'CANCELLED')),
    attempt          integer     NOT NULL DEFAULT 0,
    worker_id        text,
    lease_expires_at timestamptz,
    started_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- a terminal execution cancels its open commands; only open ones are worth indexing
CREATE INDEX command_open_idx ON noetl.command (execution_id)
    WHERE status IN ('PENDING', 'CLAIMED');
CREATE INDEX command_execution_idx ON noetl.command (execution_id, command_id);

CREATE TABLE noetl.outbox (
    outbox_id    bigserial   PRIMARY KEY,
    execution_id bigint      NOT NULL,
    event_id     bigint      NOT NULL,
    subject      text        NOT NULL,
    payload      jsonb       NOT NULL,
    status       text        NOT NULL DEFAULT 'PENDING'
        CHECK (status IN ('PENDING', 'IN_FLIGHT', 'PUBLISHED', 'FAILED')),
    attempts     integer     NOT NULL DEFAULT 0,
    available_at timestamptz NOT NULL DEFAULT now(),
    locked_at    timestamptz,
    published_at timestamptz,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (execution_id, event_id)
);
CREATE INDEX outbox_status_idx ON noetl.outbox (status);
-- the claim scans unpublished rows in outbox_id order; published rows never enter this index
CREATE INDEX outbox_claimable_idx ON noetl.outbox (outbox_id)
    WHERE status IN ('PENDING', 'IN_FLIGHT');

CREATE TABLE noetl.event (
    event_id            bigint      PRIMARY KEY,
    execution_id        bigint      NOT NULL,
    event_type          text        NOT NULL,
    step                text,
    status              text,
    created_at          timestamptz NOT NULL,
    context             jsonb,
    meta                jsonb,
    worker_id           text,
    parent_execution_id bigint,
    catalog_path        text,
    projected_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_execution_idx ON noetl.event (execution_id, event_id);

CREATE TABLE noetl.worker (
    worker_id     text        PRIMARY KEY,
    pool          text        NOT NULL,
    capacity      integer     NOT NULL DEFAULT 1,
    hostname      text,
    version       text,
    status        text        NOT NULL DEFAULT 'ACTIVE',
    in_flight     integer     NOT NULL DEFAULT 0,
    registered_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    meta          jsonb
);
CREATE INDEX worker_pool_idx ON noetl.worker (pool, status);
