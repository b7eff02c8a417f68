"""3CX: calls journaled by a 3CX and the HTTP a 3CX asks (DBN API, CRM template)."""
