"""The dashboard: start and follow shelf optimization runs, score a transaction, see the endpoints.

`streamlit run app/app.py` with DATABRICKS_HOST / DATABRICKS_TOKEN (or Databricks Apps' own credentials) set;
`make app` does that against the local workspace server.
"""

import streamlit as st

st.set_page_config(page_title="Serving architectures", page_icon=":material/storefront:", layout="wide")
st.navigation(
    [
        st.Page(
            "views/shelf_optimization.py", title="Shelf optimization", icon=":material/shelves:", default=True
        ),
        st.Page("views/fraud_check.py", title="Fraud check", icon=":material/credit_card:"),
        st.Page("views/endpoints.py", title="Endpoints", icon=":material/hub:"),
    ]
).run()
