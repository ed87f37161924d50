"""A second app in twenty lines of logic: proof that an app needs its own folder and one registry line."""
