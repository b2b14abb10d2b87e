"""A stand-in trainer package that switches SageAttention on in the ways users do (tests only)."""
