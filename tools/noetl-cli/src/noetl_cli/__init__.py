"""The noetl command line client."""
