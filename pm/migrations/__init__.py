"""Numbered schema migrations, applied in order at start."""
