"""``make bench``: the local twin side by side with Feast's feature server and ``mlflow models serve``."""
