"""The noetl command line client and the small sync API client it is built on."""

from ._api import DEFAULT_SERVER, TERMINAL, Api, CliError, WaitTimeout
from ._credentials import credentials_path, store_token, token_for

__all__ = [
    "DEFAULT_SERVER",
    "TERMINAL",
    "Api",
    "CliError",
    "WaitTimeout",
    "credentials_path",
    "store_token",
    "token_for",
]
