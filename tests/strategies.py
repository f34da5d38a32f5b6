"""Hypothesis strategies shared by the unit and the server property tests."""

from __future__ import annotations

import string

from hypothesis import strategies as st

# Printable, not whitespace, not '.', and not a wildcard character.
token_chars = st.characters(
    blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp", "Co", "Cn", "Cf"),
    blacklist_characters=".*>",
).filter(lambda c: c.isprintable() and not c.isspace())
tokens = st.text(token_chars, min_size=1, max_size=8)
subjects = st.lists(tokens, min_size=1, max_size=6).map(".".join)
name_chars = token_chars.filter(lambda c: c not in "/\\")
names = st.text(name_chars, min_size=1, max_size=32)
whitespace = st.sampled_from(" \t\r\n\v\f\u00a0\u2028\u3000")

# Header names: mostly RFC 9110 tokens (so that values get exercised), and any text.
header_names = st.text("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits, min_size=1, max_size=6)
header_dicts = st.dictionaries(
    header_names | st.text(max_size=6), st.text(max_size=12), min_size=1, max_size=3
)
