//! Whole-repository tests live in `it/` (one test binary); this library is
//! empty on purpose so the crate can carry them.
