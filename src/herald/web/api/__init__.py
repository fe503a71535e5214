"""The REST API under ``/api/v1``: JSON, token or session auth, problem+json errors."""
