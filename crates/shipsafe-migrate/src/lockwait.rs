//! How a migration waits for its locks on a live database.
//!
//! A statement that waits for a lock (an `ALTER TABLE` behind a long report
//! query) makes every later statement on that table queue behind it: with
//! one 3 s `lock_timeout`, the app's inserts stall for 3 s. So each attempt
//! waits only a short slice (100 ms, then 200, 400, at most 500 ms, never
//! more than `lock_timeout`), gives up, lets the app's queue drain during a
//! pause, and tries again, until the waiting adds up to the budget of
//! `lock_timeout × (1 + lock_retries)`. No app statement then waits behind
//! the migration for more than about half a second.

use std::time::Duration;

const FIRST_SLICE: Duration = Duration::from_millis(100);
const LONGEST_SLICE: Duration = Duration::from_millis(500);
const LONGEST_PAUSE: Duration = Duration::from_secs(2);

/// The lock waits of one migration (or one statement outside a
/// transaction).
#[derive(Debug, Clone)]
pub struct LockWaits {
    limit: Duration,
    budget: Duration,
    waited: Duration,
    attempt: u32,
    /// Waits of `lock_timeout` from now on (see [`LockWaits::hold_on`]).
    whole: bool,
}

impl LockWaits {
    /// For `lock_timeout` and `lock_retries` as configured.
    pub fn new(lock_timeout: Duration, lock_retries: u32) -> Self {
        Self {
            limit: lock_timeout,
            budget: lock_timeout.saturating_mul(lock_retries.saturating_add(1)),
            waited: Duration::ZERO,
            attempt: 0,
            whole: false,
        }
    }

    /// The `lock_timeout` of the next attempt.
    pub fn slice(&self) -> Duration {
        if self.limit.is_zero() {
            // lock_timeout = 0: PostgreSQL's "wait as long as it takes".
            return Duration::ZERO;
        }
        let grown = if self.whole {
            self.limit
        } else {
            FIRST_SLICE.saturating_mul(1 << self.attempt.min(8))
        };
        grown
            .min(if self.whole {
                self.limit
            } else {
                LONGEST_SLICE
            })
            .min(self.limit)
            .min(self.budget.saturating_sub(self.waited))
    }

    /// The attempt just made timed out waiting for a lock: the pause before
    /// the next one, or `None` when the budget is spent.
    pub fn timed_out(&mut self) -> Option<Duration> {
        self.waited += self.slice();
        self.attempt += 1;
        if self.waited >= self.budget {
            return None;
        }
        Some(
            FIRST_SLICE
                .saturating_mul(1 << self.attempt.min(8))
                .min(LONGEST_PAUSE),
        )
    }

    /// The lock was missed after earlier statements of the migration ran
    /// (they may have rewritten a table, holding its lock): short attempts
    /// would repeat that work each time, so the remaining attempts wait up
    /// to `lock_timeout` each, as one long wait would.
    pub fn hold_on(&mut self) {
        self.whole = true;
    }

    /// Attempts that timed out so far.
    pub fn retries(&self) -> u32 {
        self.attempt
    }

    /// The longest single wait, for messages.
    pub fn longest(&self) -> Duration {
        LONGEST_SLICE.min(self.limit)
    }

    /// The total lock wait allowed, for messages.
    pub fn budget(&self) -> Duration {
        self.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(lock_ms: u64, retries: u32) -> (Duration, u32) {
        (Duration::from_millis(lock_ms), retries)
    }

    #[test]
    fn slices_start_short_grow_to_half_a_second_and_spend_the_same_budget() {
        let mut w = {
            let (l, r) = opts(3000, 5);
            LockWaits::new(l, r)
        };
        let mut slices = Vec::new();
        let mut waited = Duration::ZERO;
        loop {
            let s = w.slice();
            assert!(s <= Duration::from_millis(500));
            slices.push(s.as_millis());
            waited += s;
            if w.timed_out().is_none() {
                break;
            }
        }
        assert_eq!(&slices[..4], &[100, 200, 400, 500]);
        assert_eq!(
            waited,
            Duration::from_secs(18),
            "3 s x 6 attempts of waiting"
        );
        assert_eq!(w.retries() as usize, slices.len());
    }

    #[test]
    fn after_work_was_done_the_waits_are_whole_again() {
        let mut w = {
            let (l, r) = opts(3000, 2);
            LockWaits::new(l, r)
        };
        assert_eq!(w.slice(), Duration::from_millis(100));
        w.timed_out();
        w.hold_on();
        assert_eq!(w.slice(), Duration::from_millis(3000));
        let mut attempts = 1;
        while w.timed_out().is_some() {
            attempts += 1;
        }
        assert!(attempts <= 4, "{attempts} attempts");
    }

    #[test]
    fn a_short_lock_timeout_is_never_exceeded() {
        let mut w = {
            let (l, r) = opts(50, 0);
            LockWaits::new(l, r)
        };
        assert_eq!(w.slice(), Duration::from_millis(50));
        assert_eq!(w.timed_out(), None, "no retries: one wait of lock_timeout");
    }
}
