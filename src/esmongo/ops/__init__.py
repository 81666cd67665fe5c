"""Operations on a live store: migrations (copy, verify, switch), backup and restore,
`check` (the invariants, and repairs), schema checks."""
