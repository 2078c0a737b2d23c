"""Fraud check: a transaction to the fraud endpoint, which looks the customer up itself."""

import streamlit as st
from databricks.sdk.errors import DatabricksError

from dashboard import fraud
from dashboard.config import load_config, workspace_client

cfg = load_config()
st.title("Fraud check")
st.caption(
    f"Send the customer's id and the transaction's values to the {cfg.fraud_endpoint!r} endpoint. It looks "
    "the customer's history up in the online store, so you only type what the till knows."
)

with st.form("transaction"):
    left, middle, right = st.columns(3)
    customer_id = left.number_input("Customer id", value=1, step=1, key="customer_id")
    amount = middle.number_input("Amount", value=120.0, step=10.0, key="amount")
    hour = right.number_input("Hour of day (0-23)", value=14, step=1, key="hour")
    merchant_category = left.selectbox(
        "Merchant category", fraud.MERCHANT_CATEGORIES, key="merchant_category"
    )
    channel = middle.selectbox("Channel", fraud.CHANNELS, key="channel")
    distance = right.number_input("Distance from home (km)", value=5.0, step=1.0, key="distance")
    submitted = st.form_submit_button("Check", type="primary")

if submitted:
    record, errors = fraud.transaction_record(customer_id, amount, merchant_category, hour, channel, distance)
    for message in errors:
        st.error(message)
    if not errors:
        try:
            result = fraud.score(workspace_client(), cfg.fraud_endpoint, record, cfg.fraud_threshold)
        except DatabricksError as error:
            st.error(f"The endpoint {cfg.fraud_endpoint!r} did not score the transaction: {error}")
            st.stop()
        st.metric("Fraud score", f"{result.score:.3f}")
        {"fraud": st.error, "review": st.warning, "ok": st.success}[result.level](result.text)
        st.caption(
            f"Served by {result.served_by or cfg.fraud_endpoint}. A customer the online store does not know "
            "is scored without history: the endpoint answers from the transaction's values alone."
        )
