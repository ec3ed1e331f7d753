"""File and process helpers: files whole or absent, locks, checkpoints, safe unpickling, logs,
signals, fault injection for tests, and Dassl's fixes for current torch. Imports nothing of dept."""
