"""Embedded dev stack: Postgres, nats-server and the suite on loopback."""
