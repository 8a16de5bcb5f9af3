-- At most one key signs at a time: rotations retire every signing key in
-- the transaction that adds the new one, and this index makes the rule hold
-- even for a writer that forgets the advisory lock rotations take.
create unique index signing_keys_one_signing on signing_keys ((true))
    where retire_after is null;
