//! Rate limits for the notices a peer can trigger: a flood of bad messages
//! must not become a flood of lines on the operator's screen.

use std::time::{Duration, Instant};

/// Lets through at most one notice of each kind per interval, and counts
/// the ones it holds back. Kinds are `&'static str` names from the code, so
/// its table holds at most as many entries as the code names kinds.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    /// Per kind: when one was last let through, and how many were held back since.
    kinds: Vec<(&'static str, Instant, u64)>,
}

impl Throttle {
    /// At most one notice per kind per `interval`.
    pub fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            kinds: Vec::new(),
        }
    }

    /// Whether a notice of `kind` may be shown at `now`: `Some(held)` with
    /// the number held back since the last one shown, or `None` to hold it.
    pub fn admit(&mut self, kind: &'static str, now: Instant) -> Option<u64> {
        match self.kinds.iter_mut().find(|(name, ..)| *name == kind) {
            None => {
                self.kinds.push((kind, now, 0));
                Some(0)
            }
            Some((_, last, held)) if now.duration_since(*last) >= self.interval => {
                *last = now;
                Some(std::mem::take(held))
            }
            Some((_, _, held)) => {
                *held += 1;
                None
            }
        }
    }

    /// `text` as shown when `held` notices of its kind were held back.
    pub fn with_count(text: &str, held: u64) -> String {
        match held {
            0 => text.to_string(),
            held => format!("{text} (and {held} more like it, not shown)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_notice_per_kind_per_interval_and_the_rest_are_counted() {
        let mut throttle = Throttle::new(Duration::from_secs(5));
        let start = Instant::now();
        assert_eq!(throttle.admit("flood", start), Some(0));
        for second in 1..5 {
            assert_eq!(
                throttle.admit("flood", start + Duration::from_secs(second)),
                None
            );
        }
        assert_eq!(throttle.admit("other", start), Some(0), "kinds are apart");
        assert_eq!(
            throttle.admit("flood", start + Duration::from_secs(5)),
            Some(4)
        );
        assert_eq!(
            throttle.admit("flood", start + Duration::from_secs(11)),
            Some(0)
        );
        assert_eq!(Throttle::with_count("x", 0), "x");
        assert_eq!(
            Throttle::with_count("x", 4),
            "x (and 4 more like it, not shown)"
        );
    }
}
