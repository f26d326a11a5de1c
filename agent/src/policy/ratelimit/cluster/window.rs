//! Counter windows aligned to Unix time (fixed windows, UTC days and
//! months), so every agent of the fleet names the same window.
use super::*;

/// Wall-clock time (windows are aligned to Unix time, so every agent of
/// the fleet agrees on them); tests move a fake one by hand.
#[derive(Debug, Clone)]
pub enum WallClock {
    Real,
    Fake(Arc<AtomicU64>),
}

impl WallClock {
    pub fn unix_ms(&self) -> u64 {
        match self {
            WallClock::Real => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            WallClock::Fake(ms) => ms.load(Ordering::Acquire),
        }
    }
}

/// The window scheme of a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// Fixed windows of this many milliseconds, aligned to the Unix epoch.
    Fixed(u64),
    /// UTC calendar days.
    Day,
    /// UTC calendar months.
    Month,
}

const DAY_MS: u64 = 86_400_000;

impl Window {
    /// The window containing `unix_ms`.
    pub fn id(self, unix_ms: u64) -> u64 {
        match self {
            Window::Fixed(len) => unix_ms / len,
            Window::Day => unix_ms / DAY_MS,
            Window::Month => {
                let (y, m, _) = civil_from_days((unix_ms / DAY_MS) as i64);
                (y as u64) * 12 + (m as u64 - 1)
            }
        }
    }

    /// Start of window `id` (Unix ms).
    pub fn start_ms(self, id: u64) -> u64 {
        match self {
            Window::Fixed(len) => id * len,
            Window::Day => id * DAY_MS,
            Window::Month => {
                let (y, m) = ((id / 12) as i64, (id % 12) as u32 + 1);
                days_from_civil(y, m, 1) as u64 * DAY_MS
            }
        }
    }

    /// End of window `id` (exclusive).
    pub fn end_ms(self, id: u64) -> u64 {
        self.start_ms(id + 1)
    }

    /// How long Redis keeps a window's keys: two windows, so a late push
    /// of the previous window still finds its key.
    pub fn ttl_ms(self) -> u64 {
        match self {
            Window::Fixed(len) => 2 * len + 10_000,
            Window::Day => 2 * DAY_MS,
            Window::Month => 62 * DAY_MS,
        }
    }

    /// A short tag for the Redis key.
    pub(super) fn tag(self) -> String {
        match self {
            Window::Fixed(len) => format!("{len}ms"),
            Window::Day => "day".into(),
            Window::Month => "month".into(),
        }
    }
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31), proleptic Gregorian.
pub(super) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01.
pub(super) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
