"""Importing this package registers every built-in CRM dialect."""
