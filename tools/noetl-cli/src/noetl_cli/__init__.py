"""The noetl command line client and the small sync API client it is built on."""

from ._api import DEFAULT_SERVER, TERMINAL, Api, CliError, WaitTimeout

__all__ = ["DEFAULT_SERVER", "TERMINAL", "Api", "CliError", "WaitTimeout"]
