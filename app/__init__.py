"""The application: the `callcenter` command (`app.cli`), which composes the packages into processes."""
