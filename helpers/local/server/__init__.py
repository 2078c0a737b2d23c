"""The local workspace server: Databricks REST contract for serving endpoints and jobs."""
