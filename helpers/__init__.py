"""Serving architectures on Databricks, with a local twin."""
