//! Cron schedules as `robfig/cron/v3`'s `ParseStandard` (which Kubernetes uses for CronJobs)
//! accepts them, with its error messages: five fields, `*`, `?`, ranges, steps, month and day
//! names, and the `@yearly` … `@hourly` and `@every <duration>` descriptors. [`parse`] gives
//! the parsed [`Schedule`] the CronJob controller computes run times from.

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &[
        ("sun", 0),
        ("mon", 1),
        ("tue", 2),
        ("wed", 3),
        ("thu", 4),
        ("fri", 5),
        ("sat", 6),
    ],
};

/// A parsed schedule: one bit per allowed value of each field (bit `n` for value `n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Minutes 0-59.
    pub minutes: u64,
    /// Hours 0-23.
    pub hours: u64,
    /// Days of the month 1-31.
    pub days_of_month: u64,
    /// Months 1-12.
    pub months: u64,
    /// Days of the week 0-6 (Sunday is 0).
    pub days_of_week: u64,
    /// The day-of-month field was `*` or `?` (without a step): a day then has to match both
    /// day fields; otherwise either one (robfig/cron's "star bit", as in Vixie cron).
    pub days_of_month_star: bool,
    /// The day-of-week field was `*` or `?` (without a step).
    pub days_of_week_star: bool,
    /// A `TZ=` / `CRON_TZ=` prefix's zone.
    pub zone: Option<String>,
    /// `@every <duration>`: runs this many whole seconds apart (at least 1); the fields above
    /// are then unused.
    pub every_seconds: Option<u64>,
}

/// Checks a schedule; `Err` is robfig/cron's message.
pub(crate) fn parse_standard(spec: &str) -> Result<(), String> {
    parse(spec).map(drop)
}

/// Parses a schedule as robfig/cron's `ParseStandard`; `Err` is its message.
pub fn parse(spec: &str) -> Result<Schedule, String> {
    if spec.is_empty() {
        return Err("empty spec string".to_owned());
    }
    let mut spec = spec;
    let mut zone = None;
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        let eq = spec.find('=').unwrap_or(0);
        let Some(space) = spec.find(' ') else {
            return Err(format!(
                "provided bad location {}: unknown time zone {}",
                &spec[eq + 1..],
                &spec[eq + 1..]
            ));
        };
        let name = &spec[eq + 1..space];
        if !plausible_zone(name) {
            return Err(format!(
                "provided bad location {name}: unknown time zone {name}"
            ));
        }
        zone = Some(name.to_owned());
        spec = spec[space..].trim();
    }
    let mut schedule = if spec.starts_with('@') {
        descriptor(spec)?
    } else {
        let fields: Vec<&str> = spec.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            ));
        }
        let mut bits = [0_u64; 5];
        let mut stars = [false; 5];
        for (i, (field, bounds)) in fields
            .iter()
            .zip([&MINUTES, &HOURS, &DOM, &MONTHS, &DOW])
            .enumerate()
        {
            for expr in field.split(',').filter(|e| !e.is_empty()) {
                let (b, star) = range(expr, bounds)?;
                bits[i] |= b;
                stars[i] |= star;
            }
        }
        let [minutes, hours, days_of_month, months, days_of_week] = bits;
        Schedule {
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            days_of_month_star: stars[2],
            days_of_week_star: stars[4],
            zone: None,
            every_seconds: None,
        }
    };
    schedule.zone = zone;
    Ok(schedule)
}

/// Bits `min..=max` with `step`.
fn bits(min: u32, max: u32, step: u32) -> u64 {
    (min..=max)
        .step_by(usize::try_from(step).unwrap_or(1).max(1))
        .fold(0, |acc, v| acc | (1_u64 << v))
}

/// A schedule of fixed fields (the descriptors); `*` fields carry the star bit.
fn fixed(
    minute: u32,
    hour: Option<u32>,
    dom: Option<u32>,
    month: Option<u32>,
    dow: Option<u32>,
) -> Schedule {
    let one = |v: Option<u32>, b: &Bounds| v.map_or_else(|| bits(b.min, b.max, 1), |v| 1 << v);
    Schedule {
        minutes: 1 << minute,
        hours: one(hour, &HOURS),
        days_of_month: one(dom, &DOM),
        months: one(month, &MONTHS),
        days_of_week: one(dow, &DOW),
        days_of_month_star: dom.is_none(),
        days_of_week_star: dow.is_none(),
        zone: None,
        every_seconds: None,
    }
}

fn plausible_zone(zone: &str) -> bool {
    zone == "UTC"
        || zone == "Local"
        || (!zone.is_empty()
            && zone.split('/').all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'+'))
            }))
}

fn descriptor(spec: &str) -> Result<Schedule, String> {
    match spec {
        "@yearly" | "@annually" => Ok(fixed(0, Some(0), Some(1), Some(1), None)),
        "@monthly" => Ok(fixed(0, Some(0), Some(1), None, None)),
        "@weekly" => Ok(fixed(0, Some(0), None, None, Some(0))),
        "@daily" | "@midnight" => Ok(fixed(0, Some(0), None, None, None)),
        "@hourly" => Ok(fixed(0, None, None, None, None)),
        s => match s.strip_prefix("@every ") {
            Some(d) => match go_duration_seconds(d) {
                Some(seconds) => Ok(Schedule {
                    every_seconds: Some(seconds.max(1)),
                    ..fixed(0, None, None, None, None)
                }),
                None => Err(format!(
                    "failed to parse duration {s}: time: invalid duration {}",
                    super::errors::go_quote(d)
                )),
            },
            None => Err(format!("unrecognized descriptor: {s}")),
        },
    }
}

/// `time.ParseDuration(d)` in whole seconds (negative ones as 0) when Go accepts `d`
/// (e.g. `1h30m`, `90s`, `1.5h`).
fn go_duration_seconds(d: &str) -> Option<u64> {
    let negative = d.starts_with('-');
    let d = d.strip_prefix(['-', '+']).unwrap_or(d);
    if d == "0" {
        return Some(0);
    }
    let mut rest = d;
    let mut any = false;
    let mut seconds = 0.0_f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 || rest[..num_len] == *"." {
            return None;
        }
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let (unit, scale) = [
            ("ns", 1e-9),
            ("us", 1e-6),
            ("µs", 1e-6),
            ("μs", 1e-6),
            ("ms", 1e-3),
            ("s", 1.0),
            ("m", 60.0),
            ("h", 3600.0),
        ]
        .into_iter()
        .find(|(u, _)| rest.starts_with(u))?;
        rest = &rest[unit.len()..];
        seconds += number * scale;
        any = true;
    }
    if !any {
        return None;
    }
    if negative {
        return Some(0);
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a non-negative duration, truncated to whole seconds as robfig/cron does"
    )]
    Some(seconds.floor().min(u64::MAX as f64) as u64)
}

/// The bits of one comma-separated part of a field, and whether it was a bare `*` / `?`.
fn range(expr: &str, b: &Bounds) -> Result<(u64, bool), String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_and_high.len() == 1;
    let star = low_and_high[0] == "*" || low_and_high[0] == "?";
    let (start, mut end) = if star {
        (b.min, b.max)
    } else {
        let start = int_or_name(low_and_high[0], b)?;
        let end = match low_and_high.len() {
            1 => start,
            2 => int_or_name(low_and_high[1], b)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        (start, end)
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = must_parse_int(range_and_step[1])?;
            if single {
                end = b.max;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < b.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        ));
    }
    if end > b.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok((bits(start, end, step), star && step == 1))
}

fn int_or_name(expr: &str, b: &Bounds) -> Result<u32, String> {
    let lower = expr.to_lowercase();
    if let Some((_, v)) = b.names.iter().find(|(n, _)| *n == lower) {
        return Ok(*v);
    }
    must_parse_int(expr)
}

fn must_parse_int(expr: &str) -> Result<u32, String> {
    let digits = expr.strip_prefix(['+', '-']).unwrap_or(expr);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing {}: invalid syntax",
            super::errors::go_quote(expr)
        ));
    }
    let n: i64 = match expr.parse() {
        Ok(n) => n,
        Err(_) => {
            return Err(format!(
                "failed to parse int from {expr}: strconv.Atoi: parsing {}: value out of range",
                super::errors::go_quote(expr)
            ));
        }
    };
    if n < 0 {
        return Err(format!("negative number ({n}) not allowed: {expr}"));
    }
    u32::try_from(n).map_err(|_| format!("end of range ({n}) above maximum: {expr}"))
}

#[cfg(test)]
mod tests {
    use super::{Schedule, parse, parse_standard};

    fn values(bits: u64) -> Vec<u32> {
        (0..64).filter(|v| bits & (1 << v) != 0).collect()
    }

    #[test]
    fn parsed_fields() {
        let s = parse("*/15 9-17 * * mon-fri").expect("valid");
        assert_eq!(values(s.minutes), vec![0, 15, 30, 45]);
        assert_eq!(values(s.hours), (9..=17).collect::<Vec<_>>());
        assert_eq!(values(s.days_of_week), vec![1, 2, 3, 4, 5]);
        assert_eq!(values(s.days_of_month), (1..=31).collect::<Vec<_>>());
        assert!(s.days_of_month_star && !s.days_of_week_star);
        let s = parse("5/20 0 */2 JAN,jul ?").expect("valid");
        assert_eq!(values(s.minutes), vec![5, 25, 45]);
        assert_eq!(values(s.months), vec![1, 7]);
        assert!(
            !s.days_of_month_star && s.days_of_week_star,
            "*/2 has no star bit"
        );
        let weekly = parse("@weekly").expect("valid");
        assert_eq!(
            (
                values(weekly.minutes),
                values(weekly.hours),
                values(weekly.days_of_week)
            ),
            (vec![0], vec![0], vec![0])
        );
        assert!(weekly.days_of_month_star);
        assert_eq!(parse("@yearly"), parse("@annually"));
        assert_eq!(parse("@daily"), parse("0 0 * * *"));
        assert_eq!(parse("@hourly"), parse("0 * * * *"));
        let zoned = parse("CRON_TZ=Europe/Paris 0 6 * * *").expect("valid");
        assert_eq!(zoned.zone.as_deref(), Some("Europe/Paris"));
        let every: Schedule = parse("@every 1h30m").expect("valid");
        assert_eq!(every.every_seconds, Some(5400));
        assert_eq!(parse("@every 500ms").expect("valid").every_seconds, Some(1));
    }

    #[test]
    fn accepts_what_robfig_cron_accepts() {
        for ok in [
            "*/5 * * * *",
            "0 0 * * 0",
            "@hourly",
            "@every 1h30m",
            "0 9-17 * * mon-fri",
            "15,45 * 1 JAN *",
            "? * * * *",
            "TZ=UTC 0 * * * *",
        ] {
            assert_eq!(parse_standard(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_with_robfig_cron_messages() {
        for (bad, msg) in [
            ("* * * *", "expected exactly 5 fields, found 4: [* * * *]"),
            ("@fortnightly", "unrecognized descriptor: @fortnightly"),
            ("60 * * * *", "end of range (60) above maximum (59): 60"),
            ("0 0 0 * *", "beginning of range (0) below minimum (1): 0"),
            (
                "5-3 * * * *",
                "beginning of range (5) beyond end of range (3): 5-3",
            ),
            (
                "x * * * *",
                "failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax",
            ),
            (
                "*/0 * * * *",
                "step of range should be a positive number: */0",
            ),
            ("1-2-3 * * * *", "too many hyphens: 1-2-3"),
        ] {
            assert_eq!(parse_standard(bad), Err(msg.to_owned()), "{bad}");
        }
    }
}
