"""IM chat (web chat with a bot): not built yet; the package holds its place in the layout."""
