//! A seeded RNG for backoff jitter (splitmix64): the core takes no `rand` dependency and
//! the same seed gives the same trace.

#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max` (the tiny modulo bias does not matter for jitter).
    pub(crate) fn up_to(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(n) => self.next_u64() % n,
            None => self.next_u64(),
        }
    }
}

/// Exponential backoff with full jitter: uniform in `0..=min(cap, base·2^(attempt-1))`.
pub(crate) fn backoff(config: &crate::Config, rng: &mut Rng, attempt: u32) -> std::time::Duration {
    let base = config.backoff_base.as_millis() as u64;
    let cap = config.backoff_cap.as_millis() as u64;
    let shift = attempt.saturating_sub(1).min(40);
    let ceiling = base.saturating_mul(1u64 << shift).min(cap);
    std::time::Duration::from_millis(rng.up_to(ceiling))
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn same_seed_gives_same_numbers_and_bounds_hold() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let x = a.up_to(10);
            assert_eq!(x, b.up_to(10));
            assert!(x <= 10);
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }
}
