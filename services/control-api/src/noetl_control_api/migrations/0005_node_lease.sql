-- Snowflake node ids leased to live processes, so two of them never mint ids with the same
-- node bits (hashing names into 10 bits collides). A lease is renewed while its holder lives;
-- an expired one may be taken by someone else.
CREATE TABLE noetl.node_lease (
    node_id    integer     PRIMARY KEY CHECK (node_id BETWEEN 0 AND 1023),
    holder     text        NOT NULL UNIQUE,
    expires_at timestamptz NOT NULL,
    leased_at  timestamptz NOT NULL DEFAULT now()
);
