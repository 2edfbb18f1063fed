"""What a command prints: the closing table, warnings once per process, progress bars."""
