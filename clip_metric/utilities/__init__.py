"""Internal utilities: argument checks, file readers, precision, random-number state, constants."""
