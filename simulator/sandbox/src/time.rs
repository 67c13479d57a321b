//! ISO 8601 timestamps without the wall clock: the sandbox counts from a fixed epoch.

/// 2025-10-01T00:00:00.000Z in milliseconds since the Unix epoch: the sandbox's "start".
pub(crate) const EPOCH_MS: i64 = 1_759_276_800_000;

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2025-10-01T12:34:56.789Z`.
pub(crate) fn iso(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        (rem / 60_000) % 60,
        (rem / 1000) % 60,
        rem % 1000
    )
}

/// `2025-10-01`.
pub(crate) fn iso_date(ms: i64) -> String {
    iso(ms)[..10].to_string()
}

fn num(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM[:SS[.fff]][Z|±HH:MM]` into milliseconds.
pub(crate) fn parse_ms(s: &str) -> Option<i64> {
    if s.len() < 10 || !s.is_char_boundary(10) {
        return None;
    }
    let (date, rest) = s.split_at(10);
    let mut parts = date.split('-');
    let y = num(parts.next()?)?;
    let m = num(parts.next()?)?;
    let d = num(parts.next()?)?;
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut ms = days_from_civil(y, m, d) * 86_400_000;
    if rest.is_empty() {
        return Some(ms);
    }
    let rest = rest.strip_prefix('T')?;
    let (clock, offset_ms) = if let Some(c) = rest.strip_suffix('Z') {
        (c, 0)
    } else if rest.len() > 6
        && (rest.ends_with(|c: char| c.is_ascii_digit()))
        && matches!(rest.as_bytes()[rest.len() - 6], b'+' | b'-')
        && rest.as_bytes()[rest.len() - 3] == b':'
    {
        let (c, off) = rest.split_at(rest.len() - 6);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let h = num(&off[1..3])?;
        let mi = num(&off[4..6])?;
        (c, sign * (h * 3_600_000 + mi * 60_000))
    } else {
        (rest, 0)
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (clock, None),
    };
    let mut fields = hms.split(':');
    let h = num(fields.next()?)?;
    let mi = num(fields.next()?)?;
    let sec = match fields.next() {
        Some(x) => num(x)?,
        None => 0,
    };
    if fields.next().is_some() || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let millis = match frac {
        Some(f) => {
            let digits: String = f.chars().take(3).collect();
            num(&format!("{digits:0<3}"))?
        }
        None => 0,
    };
    ms += h * 3_600_000 + mi * 60_000 + sec * 1000 + millis - offset_ms;
    Some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_round_trips() {
        assert_eq!(iso(EPOCH_MS), "2025-10-01T00:00:00.000Z");
        assert_eq!(parse_ms("2025-10-01"), Some(EPOCH_MS));
        assert_eq!(parse_ms("2025-10-01T02:00:00+02:00"), Some(EPOCH_MS));
        assert_eq!(parse_ms("2025-10-01T00:00:01.5Z"), Some(EPOCH_MS + 1500));
        assert_eq!(iso(EPOCH_MS - 1), "2025-09-30T23:59:59.999Z");
        assert_eq!(parse_ms("2025-13-01"), None);
        assert_eq!(parse_ms("yesterday"), None);
    }
}
