"""NoETL control API: catalog, execute, orchestrator, events, claims."""
