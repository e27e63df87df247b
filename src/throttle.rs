//! Rate limits for the notices a peer can trigger: a flood of bad messages
//! must not become a flood of lines on the operator's screen.

use std::time::{Duration, Instant};

/// Lets through at most `burst` notices of each kind at once, then one per
/// interval, and counts the ones it holds back. Kinds are `&'static str`
/// names from the code, so its table holds at most as many entries as the
/// code names kinds.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    burst: f64,
    /// Per kind: notices that may go now (up to `burst`), when that was
    /// counted, and how many were held back since the last one shown.
    kinds: Vec<(&'static str, f64, Instant, u64)>,
}

impl Throttle {
    /// At most one notice per kind per `interval`.
    pub fn new(interval: Duration) -> Throttle {
        Throttle::with_burst(interval, 1)
    }

    /// `burst` notices per kind at once (a server going and coming back
    /// is news worth every line), then one per `interval`.
    pub fn with_burst(interval: Duration, burst: u32) -> Throttle {
        Throttle {
            interval,
            burst: f64::from(burst.max(1)),
            kinds: Vec::new(),
        }
    }

    /// Whether a notice of `kind` may be shown at `now`: `Some(held)` with
    /// the number held back since the last one shown, or `None` to hold it.
    pub fn admit(&mut self, kind: &'static str, now: Instant) -> Option<u64> {
        let index = match self.kinds.iter().position(|(name, ..)| *name == kind) {
            Some(index) => index,
            None => {
                self.kinds.push((kind, self.burst, now, 0));
                self.kinds.len() - 1
            }
        };
        let (_, tokens, at, held) = &mut self.kinds[index];
        let earned = now.saturating_duration_since(*at).as_secs_f64() / self.interval.as_secs_f64();
        *tokens = (*tokens + earned).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Some(std::mem::take(held))
        } else {
            *held += 1;
            None
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
        let mut bursty = Throttle::with_burst(Duration::from_secs(5), 3);
        let admitted = (0..10).filter(|_| bursty.admit("flap", start).is_some());
        assert_eq!(admitted.count(), 3, "a burst of three, then held");
        assert_eq!(
            bursty.admit("flap", start + Duration::from_secs(5)),
            Some(7)
        );
        assert_eq!(
            Throttle::with_count("x", 4),
            "x (and 4 more like it, not shown)"
        );
    }
}
