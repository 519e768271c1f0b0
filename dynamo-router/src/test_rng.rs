//! A seeded generator for the unit tests' random cases: the same cases on every run, so a
//! failure reproduces, without a dependency.

/// Numbers below the bound each call passes, drawn from `seed` by a 64-bit linear
/// congruential step (its high bits: the low ones of such a step repeat quickly).
pub(crate) fn below_from(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |below| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % below
    }
}
