"""Streamlit page scripts of ``poisonbench app`` (run by Streamlit, not imported)."""
