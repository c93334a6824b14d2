"""What users touch: the command line (``cli``), MLflow tracking and the Streamlit app."""
