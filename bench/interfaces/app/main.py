"""The Streamlit entry script of ``poisonbench app``: page config and navigation."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).with_name("pages")

st.set_page_config(page_title="poisonbench", page_icon="🧪", layout="wide")
page = st.navigation(
    [
        st.Page(PAGES / "lab_page.py", title="Live label-flip lab", url_path="lab", default=True),
        st.Page(PAGES / "explorer_page.py", title="Results explorer", url_path="explorer"),
    ]
)
page.run()
