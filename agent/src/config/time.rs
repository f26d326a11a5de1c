//! The time formats of Kubernetes objects: Gateway API durations and
//! RFC 3339 timestamps.
use std::time::Duration;

/// A Gateway API `Duration`: 1-4 groups of up to 5 digits with unit h, m, s or ms.
pub(super) fn parse_duration(raw: &str) -> Option<Duration> {
    let mut rest = raw;
    let mut total = Duration::ZERO;
    let mut groups = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total += unit * u32::try_from(n).ok()?;
        groups += 1;
    }
    (1..=4).contains(&groups).then_some(total)
}

/// An RFC 3339 timestamp (`2024-05-01T10:00:00Z`, optional fraction, `Z` or
/// `±hh:mm`) as (Unix seconds, nanoseconds).
pub(super) fn parse_timestamp(raw: &str) -> Option<(i64, u32)> {
    let b = raw.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |s: &str| -> Option<i64> {
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    let (year, month, day) = (num(&raw[0..4])?, num(&raw[5..7])?, num(&raw[8..10])?);
    let (hour, min, sec) = (num(&raw[11..13])?, num(&raw[14..16])?, num(&raw[17..19])?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = &raw[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let mut s = frac[..digits.min(9)].to_owned();
        while s.len() < 9 {
            s.push('0');
        }
        nanos = s.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(&rest[3..4], ":") => {
            let sign = match &rest[0..1] {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            sign * (num(&rest[1..3])? * 3600 + num(&rest[4..6])? * 60)
        }
        _ => return None,
    };
    // Days from the civil date (proleptic Gregorian), after H. Hinnant's algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hour * 3600 + min * 60 + sec - offset, nanos))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{parse_duration, parse_timestamp};

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("1.5s"), None);
        assert_eq!(parse_duration("123456s"), None);
        assert_eq!(parse_duration("1s1s1s1s1s"), None);
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_timestamp("2024-03-01T00:00:00Z"),
            Some((1_709_251_200, 0))
        );
        assert_eq!(
            parse_timestamp("2024-03-01T01:00:00+01:00"),
            Some((1_709_251_200, 0))
        );
        assert_eq!(
            parse_timestamp("2024-03-01T00:00:00.5Z"),
            Some((1_709_251_200, 500_000_000))
        );
        assert_eq!(parse_timestamp("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
    }
}
