"""Caller lookup sources. Importing this package registers every built-in source."""

from crm.lookup import dbn, jtel, local  # noqa: F401 - imported to register them
from crm.lookup.chain import LookupChain, build_lookup_chain, parse_lookup_config

__all__ = ["LookupChain", "build_lookup_chain", "parse_lookup_config"]
