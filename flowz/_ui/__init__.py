"""The `flowz ui` dashboard: a Starlette app over a `flowz.Client` (the `ui` extra)."""
