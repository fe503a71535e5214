"""HTTP transport: FastAPI app built from a runtime."""
