//! The service's clock: what "now" is for the rules that depend on time (the week's notice of
//! an image-logic change, when a change takes effect, message times). The binary picks one;
//! tests give a clock they move.
//!
//! Signature checks keep the host's wall clock: they compare the client's clock with the
//! server's, which a moved service clock must not break.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};

use imaged_domain::time::Timestamp;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The host's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        crate::service::now()
    }
}

/// The host's clock plus an offset in seconds read from a file at every reading (no file or
/// no number: no offset), or, when the file holds `@` and a Unix time, that time, frozen. For
/// drills and end-to-end tests of time rules: the operator (or the test) writes the file and
/// every process of the deployment that reads it agrees on the time.
#[derive(Debug, Clone)]
pub struct OffsetFileClock {
    path: PathBuf,
}

impl OffsetFileClock {
    /// A clock offset by the number in `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }
}

impl Clock for OffsetFileClock {
    fn now(&self) -> Timestamp {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let text = text.trim();
        if let Some(at) = text.strip_prefix('@').and_then(|t| t.parse::<i64>().ok()) {
            return Timestamp(at);
        }
        Timestamp(crate::service::now().0.saturating_add(text.parse::<i64>().unwrap_or(0)))
    }
}

/// A clock that moves only when told (unit tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock at `t`.
    pub fn at(t: Timestamp) -> Self {
        Self(AtomicI64::new(t.0))
    }

    /// Moves the clock forward by `secs`.
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_file_moves_the_clock_and_its_absence_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = OffsetFileClock::new(dir.path().join("offset"));
        let base = crate::service::now().0;
        assert!((clock.now().0 - base).abs() <= 1);
        std::fs::write(dir.path().join("offset"), "691200\n").expect("write");
        assert!((clock.now().0 - base - 691_200).abs() <= 1);
        std::fs::write(dir.path().join("offset"), "soon").expect("write");
        assert!((clock.now().0 - base).abs() <= 1, "garbage is no offset");
        std::fs::write(dir.path().join("offset"), "@1800000000\n").expect("write");
        assert_eq!(clock.now(), Timestamp(1_800_000_000), "a frozen time");
        let manual = ManualClock::at(Timestamp(10));
        manual.advance(5);
        assert_eq!(manual.now(), Timestamp(15));
    }
}
