//! How many handshakes the server answers: the only step of secure mode
//! that costs it a Diffie-Hellman computation (about 0.6 ms of CPU in a
//! release build), so the only one a flood can use to saturate its thread.
//!
//! Two token buckets stand before every Diffie-Hellman, as WireGuard's
//! rate limiter does under load. One per host (the peer's IP address; the
//! connection where there is none, as over `ipc://`): a burst of
//! [`HOST_BURST`], then [`HOST_RATE`] a second, whatever the number of
//! connections the host opens. And one for the whole server: a burst of
//! [`SERVER_BURST`], then [`SERVER_RATE`] a second, so that many hosts
//! together still cost it at most `SERVER_RATE` Diffie-Hellman computations
//! a second (under a tenth of one core). Over TCP every connection already
//! proves that its host receives at its address (the round trip WireGuard's
//! cookie reply proves over UDP), so a spoofed address gets no connection,
//! and the bound is per real host. Sessions already open need no
//! Diffie-Hellman, so a flood never stalls them.

use std::collections::HashMap;
use std::time::Instant;

/// Handshakes one host may start at once; then [`HOST_RATE`] a second.
/// A person starts one per connection (a few more after "no such session"
/// or a rekey).
pub const HOST_BURST: f64 = 10.0;
/// See [`HOST_BURST`].
pub const HOST_RATE: f64 = 5.0;
/// Handshakes the whole server answers at once; then [`SERVER_RATE`] a
/// second.
pub const SERVER_BURST: f64 = 100.0;
/// See [`SERVER_BURST`].
pub const SERVER_RATE: f64 = 100.0;
/// Hosts whose bucket is remembered, at most; beyond, the one heard from
/// least recently is forgotten (it starts again with a full bucket, which
/// its own host rate then bounds).
pub const HOSTS_REMEMBERED: usize = 4096;

/// A token bucket: up to `burst` tokens, refilled at `rate` a second.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + earned).min(burst);
        self.at = now;
    }
}

/// Why a handshake is not answered now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spent {
    /// This host started more handshakes than its rate allows.
    Host,
    /// The server as a whole answers no more handshakes this moment.
    Server,
}

/// The server's handshake budget: per host and in all.
#[derive(Debug, Default)]
pub struct HandshakeBudget {
    hosts: HashMap<Vec<u8>, Bucket>,
    server: Option<Bucket>,
}

impl HandshakeBudget {
    /// Takes one handshake for `host` if both its bucket and the server's
    /// have one left; neither is charged otherwise.
    ///
    /// # Errors
    /// [`Spent`] says which bucket is empty.
    pub fn spend(&mut self, host: &[u8], now: Instant) -> Result<(), Spent> {
        if !self.hosts.contains_key(host) && self.hosts.len() >= HOSTS_REMEMBERED {
            let oldest = self
                .hosts
                .iter()
                .min_by_key(|(_, bucket)| bucket.at)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                self.hosts.remove(&oldest);
            }
        }
        let bucket = self
            .hosts
            .entry(host.to_vec())
            .or_insert_with(|| Bucket::full(HOST_BURST, now));
        bucket.refill(now, HOST_RATE, HOST_BURST);
        if bucket.tokens < 1.0 {
            return Err(Spent::Host);
        }
        let server = self
            .server
            .get_or_insert_with(|| Bucket::full(SERVER_BURST, now));
        server.refill(now, SERVER_RATE, SERVER_BURST);
        if server.tokens < 1.0 {
            return Err(Spent::Server);
        }
        server.tokens -= 1.0;
        bucket.tokens -= 1.0;
        Ok(())
    }

    /// How many hosts are remembered.
    #[cfg(test)]
    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_host_gets_its_burst_then_its_rate_however_many_connections_it_opens() {
        let mut budget = HandshakeBudget::default();
        let now = Instant::now();
        for _ in 0..HOST_BURST as usize {
            assert_eq!(budget.spend(b"10.0.0.1", now), Ok(()));
        }
        assert_eq!(budget.spend(b"10.0.0.1", now), Err(Spent::Host));
        assert_eq!(
            budget.spend(b"10.0.0.2", now),
            Ok(()),
            "another host is served"
        );
        let later = now + Duration::from_secs(1);
        for _ in 0..HOST_RATE as usize {
            assert_eq!(budget.spend(b"10.0.0.1", later), Ok(()));
        }
        assert_eq!(budget.spend(b"10.0.0.1", later), Err(Spent::Host));
    }

    #[test]
    fn many_hosts_together_get_at_most_the_servers_rate() {
        let mut budget = HandshakeBudget::default();
        let now = Instant::now();
        let served = (0..1000u32)
            .filter(|host| budget.spend(&host.to_be_bytes(), now).is_ok())
            .count();
        assert_eq!(served, SERVER_BURST as usize);
        assert_eq!(budget.spend(b"late", now), Err(Spent::Server));
        let later = now + Duration::from_secs(1);
        let served = (1000..2000u32)
            .filter(|host| budget.spend(&host.to_be_bytes(), later).is_ok())
            .count();
        assert_eq!(served, SERVER_RATE as usize);
    }

    #[test]
    fn the_table_of_hosts_is_bounded() {
        let mut budget = HandshakeBudget::default();
        let mut now = Instant::now();
        for host in 0..(HOSTS_REMEMBERED as u32 + 100) {
            now += Duration::from_secs(1);
            let _ = budget.spend(&host.to_be_bytes(), now);
        }
        assert_eq!(budget.hosts(), HOSTS_REMEMBERED);
    }
}
