//! The agent's one pseudo-random generator: xorshift64* (Marsaglia's
//! xorshift, Vigna's output multiplier). Cheap, lock-free and
//! allocation-free, so forked workers may use it too; it picks CPUs, worker
//! masks and reservoir slots.
//!
//! Must not be used where unpredictability matters: its output follows from
//! a guessable seed.

use std::time::{SystemTime, UNIX_EPOCH};

/// xorshift64*; the state is never zero.
pub(crate) struct Rng(u64);

impl Rng {
    /// Seeded from the clock and the pid, so processes forked at the same
    /// moment still draw differently.
    pub(crate) fn seeded() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self::from_seed(nanos ^ u64::from(std::process::id()).rotate_left(32))
    }

    /// A generator with a fixed seed (0 is replaced: xorshift would stay 0).
    pub(crate) fn from_seed(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-and-shift rather than `%`,
    /// which would favour small values.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_sequence_from_a_fixed_seed() {
        let mut rng = Rng::from_seed(1);
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(
            first,
            [
                0x47e4_ce4b_896c_dd1d,
                0xabcf_a6a8_e079_651d,
                0xb9d1_0d8f_eb73_1f57
            ]
        );
        // Seed 0 would leave xorshift stuck at 0.
        assert_eq!(Rng::from_seed(0).next_u64(), Rng::from_seed(1).next_u64());
    }

    #[test]
    fn below_stays_in_range_and_reaches_every_value() {
        let mut rng = Rng::seeded();
        for n in [1u64, 2, 3, 17, 1000] {
            let mut seen = vec![false; n.min(17) as usize];
            for _ in 0..2000 {
                let v = rng.below(n);
                assert!(v < n);
                if let Some(s) = seen.get_mut(v as usize) {
                    *s = true;
                }
            }
            if n <= 17 {
                assert!(seen.iter().all(|&s| s), "n = {n}: {seen:?}");
            }
        }
    }
}
