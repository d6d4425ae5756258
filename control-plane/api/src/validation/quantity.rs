//! Resource quantities (`k8s.io/apimachinery/pkg/api/resource`): parsing with Kubernetes'
//! grammar and errors, comparison, and the canonical form `Quantity.String()` prints
//! (`"1536Mi"` for `"1.5Gi"`, `"2"` for `"2000m"`). Values are held in nano-units, rounded
//! up like Kubernetes does; magnitudes past ~1.7e29 saturate.

use std::cmp::Ordering;

/// The regular-expression error Kubernetes' decoder reports for a malformed quantity.
pub(crate) const FORMAT_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
const SUFFIX_ERROR: &str = "unable to parse quantity's suffix";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    DecimalSi,
    BinarySi,
    DecimalExponent,
}

/// A parsed quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quantity {
    nanos: i128,
    format: Format,
}

const NANO: i128 = 1_000_000_000;

impl Quantity {
    /// Parses a quantity string; `Err` carries Kubernetes' message.
    pub(crate) fn parse(s: &str) -> Result<Self, &'static str> {
        let s = s.trim();
        if s.is_empty() {
            return Err(FORMAT_ERROR);
        }
        let (negative, digits, frac, suffix) = split(s)?;
        let (base, exponent, format) = interpret(suffix).ok_or(SUFFIX_ERROR)?;
        let mantissa: String = format!("{digits}{frac}").trim_start_matches('0').to_owned();
        let mut scale10 = -i32::try_from(frac.len()).unwrap_or(i32::MAX);
        let mut mult2 = 0u32;
        if base == 10 {
            scale10 = scale10.saturating_add(exponent);
        } else {
            mult2 = u32::try_from(exponent).unwrap_or(0);
        }
        let nanos = to_nanos(&mantissa, scale10, mult2);
        Ok(Self {
            nanos: if negative { -nanos } else { nanos },
            format,
        })
    }

    /// Whether the value is below zero.
    pub(crate) fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// Whether the value is zero.
    pub(crate) fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// `MilliValue()`, rounded up.
    pub(crate) fn milli_value(&self) -> i128 {
        ceil_div(self.nanos, 1_000_000)
    }

    /// `Quantity.String()`: the canonical form.
    pub(crate) fn canonical(&self) -> String {
        if self.nanos == 0 {
            return "0".to_owned();
        }
        let mut format = self.format;
        if format == Format::BinarySi && (self.nanos.abs() < 1024 * NANO || self.nanos % NANO != 0)
        {
            format = Format::DecimalSi;
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        if format == Format::BinarySi {
            let mut v = self.nanos.abs() / NANO;
            let mut exp = 0;
            while v % 1024 == 0 && exp < 6 {
                v /= 1024;
                exp += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][exp];
            return format!("{sign}{v}{suffix}");
        }
        let mut amount = self.nanos.abs();
        let mut exponent: i32 = -9;
        while amount % 10 == 0 {
            amount /= 10;
            exponent += 1;
        }
        match exponent.rem_euclid(3) {
            1 => {
                amount *= 10;
                exponent -= 1;
            }
            2 => {
                amount *= 100;
                exponent -= 2;
            }
            _ => {}
        }
        let suffix = if format == Format::DecimalExponent {
            if exponent == 0 {
                String::new()
            } else {
                format!("e{exponent}")
            }
        } else {
            match exponent {
                -9 => "n".into(),
                -6 => "u".into(),
                -3 => "m".into(),
                0 => String::new(),
                3 => "k".into(),
                6 => "M".into(),
                9 => "G".into(),
                12 => "T".into(),
                15 => "P".into(),
                18 => "E".into(),
                e => format!("e{e}"),
            }
        };
        format!("{sign}{amount}{suffix}")
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.nanos.cmp(&other.nanos))
    }
}

fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b > 0 { q + 1 } else { q }
}

/// Sign, integer digits, fraction digits and suffix, with Kubernetes' scanner.
fn split(s: &str) -> Result<(bool, &str, &str, &str), &'static str> {
    let b = s.as_bytes();
    let mut pos = 0;
    let mut negative = false;
    match b.first() {
        Some(b'-') => {
            negative = true;
            pos = 1;
        }
        Some(b'+') => pos = 1,
        _ => {}
    }
    let int_start = pos;
    while pos < b.len() && b[pos].is_ascii_digit() {
        pos += 1;
    }
    let digits = &s[int_start..pos];
    let mut frac = "";
    if pos < b.len() && b[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            pos += 1;
        }
        frac = &s[start..pos];
    }
    if digits.is_empty() && frac.is_empty() && pos == int_start {
        return Err(FORMAT_ERROR);
    }
    let suffix_start = pos;
    while pos < b.len() && b"eEinumkKMGTP".contains(&b[pos]) {
        pos += 1;
    }
    if pos < b.len() && matches!(b[pos], b'-' | b'+') {
        pos += 1;
    }
    while pos < b.len() && b[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos != b.len() {
        return Err(FORMAT_ERROR);
    }
    Ok((negative, digits, frac, &s[suffix_start..]))
}

/// Base, exponent and format of a suffix.
fn interpret(suffix: &str) -> Option<(u32, i32, Format)> {
    let dec = |e| Some((10, e, Format::DecimalSi));
    let bin = |e| Some((2, e, Format::BinarySi));
    match suffix {
        "" => dec(0),
        "n" => dec(-9),
        "u" => dec(-6),
        "m" => dec(-3),
        "k" => dec(3),
        "M" => dec(6),
        "G" => dec(9),
        "T" => dec(12),
        "P" => dec(15),
        "E" => dec(18),
        "Ki" => bin(10),
        "Mi" => bin(20),
        "Gi" => bin(30),
        "Ti" => bin(40),
        "Pi" => bin(50),
        "Ei" => bin(60),
        s if s.len() > 1 && (s.starts_with('e') || s.starts_with('E')) => {
            let e: i32 = s[1..].parse().ok()?;
            Some((10, e, Format::DecimalExponent))
        }
        _ => None,
    }
}

/// `mantissa * 10^scale10 * 2^mult2`, in nanos, rounded up, saturating.
fn to_nanos(mantissa: &str, scale10: i32, mult2: u32) -> i128 {
    if mantissa.is_empty() {
        return 0;
    }
    let mut scale = scale10.saturating_add(9);
    // Keep at most 36 significant digits; dropped digits only round up.
    let mut digits = mantissa;
    let mut dropped_nonzero = false;
    if digits.len() > 36 {
        let (keep, rest) = digits.split_at(36);
        dropped_nonzero = rest.bytes().any(|c| c != b'0');
        scale = scale.saturating_add(i32::try_from(rest.len()).unwrap_or(i32::MAX));
        digits = keep;
    }
    let mut v: i128 = digits.parse().unwrap_or(i128::MAX);
    let mut inexact = dropped_nonzero;
    for _ in 0..mult2 {
        v = v.saturating_mul(2);
    }
    if scale >= 0 {
        for _ in 0..scale.min(60) {
            v = v.saturating_mul(10);
        }
    } else {
        for _ in 0..(-scale).min(60) {
            if v % 10 != 0 {
                inexact = true;
            }
            v /= 10;
        }
    }
    if inexact { v.saturating_add(1) } else { v }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms_match_kubernetes() {
        for (input, canonical) in [
            ("1.5Gi", "1536Mi"),
            ("2000m", "2"),
            ("0.5", "500m"),
            ("500M", "500M"),
            ("1Gi", "1Gi"),
            ("1024", "1024"),
            ("100Mi", "100Mi"),
            ("0", "0"),
            ("1e3", "1e3"),
            ("128974848", "128974848"),
            ("129e6", "129e6"),
            ("123Mi", "123Mi"),
            ("-1", "-1"),
            ("0.1m", "100u"),
            ("1k", "1k"),
            ("512", "512"),
            ("1536Ki", "1536Ki"),
        ] {
            let q = Quantity::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(q.canonical(), canonical, "{input}");
        }
    }

    #[test]
    fn malformed_quantities_are_refused_with_kubernetes_messages() {
        for bad in ["abc", "1x", "", "1.2.3", "--1"] {
            assert_eq!(Quantity::parse(bad), Err(FORMAT_ERROR), "{bad}");
        }
        assert_eq!(Quantity::parse("1KK"), Err(SUFFIX_ERROR));
    }

    #[test]
    fn compares_across_units() {
        let a = Quantity::parse("1Gi").expect("valid");
        let b = Quantity::parse("1G").expect("valid");
        assert!(a > b);
        assert!(Quantity::parse("500m").expect("valid") < Quantity::parse("1").expect("valid"));
        assert_eq!(Quantity::parse("1.5").expect("valid").milli_value(), 1500);
    }
}
