"""Planning answers: capacity search, facility figures, uncertainty bands, offline energy bounds."""
