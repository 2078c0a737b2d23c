"""Endpoints: each serving endpoint's readiness, served entities and traffic split."""

import streamlit as st
from databricks.sdk.errors import DatabricksError

from dashboard import endpoints
from dashboard.config import workspace_client

w = workspace_client()
st.title("Serving endpoints")
names = endpoints.endpoint_names(w)
if not names:
    st.write("No serving endpoints yet: notebooks 02-05 create them.")
for name in names:
    try:
        endpoint = w.serving_endpoints.get(name)
    except DatabricksError as error:  # deleted between list and get
        st.warning(f"{name}: {error}")
        continue
    st.subheader(name)
    info = endpoints.summary(endpoint)
    cols = st.columns(3)
    for col, (label, value) in zip(cols, info.items()):
        col.metric(label, value)
    st.dataframe(endpoints.served_entities(endpoint), hide_index=True)
