"""The local twin of the Databricks services the notebooks use. Notebooks never import this directly."""
