"""Pure domain logic: no database, network or framework imports."""
