"""Page logic of the dashboard, kept apart from the Streamlit page scripts so it can be tested directly."""
