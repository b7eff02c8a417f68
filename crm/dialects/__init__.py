"""Importing this package registers every built-in CRM dialect."""

from crm.dialects import (  # noqa: F401 - imported for their @register_dialect side effect
    creatio,
    dbn,
    declarative,
    fixdigital,
    salesforce,
    webhook,
)
