//! TAI64N timestamps, as WireGuard puts in its first handshake message: the
//! server keeps the newest one per client key and refuses a handshake that is
//! not newer, so a recorded handshake cannot be replayed.

use std::time::{SystemTime, UNIX_EPOCH};

/// A TAI64N timestamp: 8 bytes of TAI64 seconds, 4 of nanoseconds, big
/// endian, so that byte order is time order.
pub type Timestamp = [u8; 12];

/// Makes timestamps that always increase, even if the clock does not.
#[derive(Debug, Default)]
pub struct Stamper {
    last: Timestamp,
}

impl Stamper {
    /// The current time as TAI64N, later than any stamp made before.
    pub fn next(&mut self) -> Timestamp {
        let mut stamp = now();
        if stamp <= self.last {
            stamp = self.last;
            let nanos = u32::from_be_bytes([stamp[8], stamp[9], stamp[10], stamp[11]]);
            stamp[8..].copy_from_slice(&nanos.wrapping_add(1).to_be_bytes());
        }
        self.last = stamp;
        stamp
    }
}

/// The current time as TAI64N (the label of 1970 TAI is 2^62 + 10).
fn now() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut stamp = [0u8; 12];
    stamp[..8].copy_from_slice(&(0x4000_0000_0000_000a_u64 + since.as_secs()).to_be_bytes());
    stamp[8..].copy_from_slice(&since.subsec_nanos().to_be_bytes());
    stamp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stamp_is_later_than_the_one_before() {
        let mut stamper = Stamper::default();
        let mut last = stamper.next();
        for _ in 0..1000 {
            let next = stamper.next();
            assert!(next > last);
            last = next;
        }
    }
}
