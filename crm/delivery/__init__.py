"""The outbox: stored events handed to each CRM dialect, in order, until taken."""
