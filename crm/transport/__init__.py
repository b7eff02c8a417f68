"""One HTTP request to a CRM: the client (auth, retries) and how a delivery failed."""
