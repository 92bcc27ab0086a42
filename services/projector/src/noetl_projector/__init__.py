"""Projects NOETL_EVENTS into the noetl.event log."""
