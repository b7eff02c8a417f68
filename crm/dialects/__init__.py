"""CRM dialects: the interface (`base`), one module per CRM, `registry`."""
