"""The suite: its schema, where each of its values came from, how its errors are worded, and the checks on it."""
