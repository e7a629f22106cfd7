//! The one retry delay of every reconnect loop: exponential from `min` to
//! `max`, with jitter so that instances that lost Redis together do not all
//! reconnect in the same millisecond.

use std::time::Duration;

use rand::Rng as _;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub const fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max, next: min }
    }

    /// The delay before the next attempt: the current step, less up to a
    /// half of it at random; each call doubles the step up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        step.mul_f64(1.0 - rand::rng().random::<f64>() / 2.0)
    }

    /// After a success: start again from `min`.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_at_most_half_jitter_and_resets() {
        let (min, max) = (Duration::from_millis(50), Duration::from_millis(400));
        let mut b = Backoff::new(min, max);
        for step in [50, 100, 200, 400, 400, 400] {
            let d = b.next_delay();
            let step = Duration::from_millis(step);
            assert!(d <= step && d >= step / 2, "{d:?} for a step of {step:?}");
        }
        b.reset();
        assert!(b.next_delay() <= min);
    }
}
