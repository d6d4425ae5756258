//! Resource quantities (`100m`, `1.5Gi`, `2e3`) with Kubernetes' syntax, rounding and canonical
//! form (apimachinery `pkg/api/resource/quantity.go`), in exact integer arithmetic.
//!
//! A quantity is held as a whole number of nano-units (10⁻⁹) in an `i128`, which is what
//! Kubernetes keeps too: parsing rounds anything finer up to the next nano-unit. The range is
//! ±1.7·10²⁹ units; Kubernetes' arbitrary-precision decimals go further, and a larger string is
//! refused here with [`QuantityError::TooLarge`] (no node has 10²⁹ bytes or cores).

use std::{cmp::Ordering, fmt, str::FromStr};

/// Nano-units per unit.
const NANO: i128 = 1_000_000_000;
/// The largest BinarySI quantity Kubernetes keeps (2⁶³−1 units): larger ones are capped to it.
const BINARY_MAX_NANOS: u128 = (i64::MAX as u128) * NANO as u128;

/// Why a quantity string was refused. `Display` is Kubernetes' message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not a number followed by a suffix (Kubernetes' `ErrFormatWrong`).
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Format,
    /// The suffix is none of the known ones (Kubernetes' `ErrSuffix`).
    #[error("unable to parse quantity's suffix")]
    Suffix,
    /// Beyond the ±1.7·10²⁹ units this type holds (Kubernetes would accept it).
    #[error("quantity {text:?} is too large: at most about 1.7e29 is supported")]
    TooLarge {
        /// What was given.
        text: String,
    },
}

/// How a quantity is written; its canonical form keeps the same kind of suffix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// Powers of 10 as SI suffixes: `n u m "" k M G T P E` (`1500m`, `2G`).
    #[default]
    DecimalSI,
    /// Powers of 1024: `Ki Mi Gi Ti Pi Ei` (`128Mi`).
    BinarySI,
    /// A decimal exponent: `2e3`, `1E-3`.
    DecimalExponent,
}

/// A Kubernetes resource quantity: an exact value and the format it was written in.
///
/// Equality, ordering and hashing look at the value only (`1Ki == 1024`), as Kubernetes'
/// `Cmp` and semantic equality do. `Display` is the canonical form (`1.5Gi` → `1536Mi`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

impl Quantity {
    /// `value` whole units in `format`.
    pub fn new(value: i64, format: Format) -> Self {
        Self {
            nanos: i128::from(value) * NANO,
            format,
        }
    }

    /// `value` thousandths of a unit in `format` (`from_milli(1500, DecimalSI)` is `1500m`).
    pub fn from_milli(value: i64, format: Format) -> Self {
        Self {
            nanos: i128::from(value) * 1_000_000,
            format,
        }
    }

    /// Parses Kubernetes quantity syntax exactly as `resource.ParseQuantity` does: an optional
    /// sign, digits with an optional fraction, then a decimal SI suffix, a binary suffix or a
    /// decimal exponent. Values finer than a nano-unit round up (away from zero); BinarySI
    /// values above 2⁶³−1 are capped to it; leading or trailing whitespace is refused (see
    /// [`Quantity::parse_trimmed`] for a field's text).
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        if text.is_empty() {
            return Err(QuantityError::Format);
        }
        let scanned = scan(text.as_bytes())?;
        let (base, exponent, mut format) = interpret(scanned.suffix)?;
        let mut digits: Vec<u8> = scanned
            .num
            .iter()
            .chain(scanned.denom)
            .map(|d| d - b'0')
            .collect();
        // The value is digits · 10^pow10; every count here is far below i64's range.
        let mut pow10 = -(scanned.denom.len() as i64);
        if base == 2 {
            for _ in 0..exponent / 10 {
                multiply_digits(&mut digits, 1024);
            }
        } else {
            pow10 += i64::from(exponent);
        }
        let too_large = || QuantityError::TooLarge {
            text: text.to_owned(),
        };
        let magnitude = match nanos_rounded_up(&digits, pow10 + 9) {
            Some(m) if format == Format::BinarySI => m.min(BINARY_MAX_NANOS),
            None if format == Format::BinarySI => BINARY_MAX_NANOS,
            Some(m) => m,
            None => return Err(too_large()),
        };
        let magnitude = i128::try_from(magnitude).map_err(|_| too_large())?;
        if format == Format::BinarySI && magnitude > 0 && magnitude < NANO {
            // Kubernetes shows fractions of one in decimal rather than rounding them.
            format = Format::DecimalSI;
        }
        Ok(Self {
            nanos: if scanned.negative {
                -magnitude
            } else {
                magnitude
            },
            format,
        })
    }

    /// Parses the text of an object's quantity field as Kubernetes' JSON and CBOR decoding
    /// does: surrounding whitespace is ignored, then [`Quantity::parse`].
    pub fn parse_trimmed(text: &str) -> Result<Self, QuantityError> {
        Self::parse(text.trim())
    }

    /// The value rounded up to a whole number, away from zero (Kubernetes' `Value()`:
    /// `1500m` → 2, `-1500m` → -2), saturating at `i64`'s bounds.
    pub fn value(&self) -> i64 {
        saturate(div_away_from_zero(self.nanos, NANO))
    }

    /// The value in thousandths, rounded up away from zero (Kubernetes' `MilliValue()`:
    /// `0.0005` → 1, `2` → 2000), saturating at `i64`'s bounds.
    pub fn milli_value(&self) -> i64 {
        saturate(div_away_from_zero(self.nanos, 1_000_000))
    }

    /// The exact value in nano-units (10⁻⁹).
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// The format it was written in (or took from arithmetic).
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether the value is zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// Whether the value is below zero (Kubernetes' `Sign() < 0`).
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// `self + other`, `None` on overflow. A zero `self` takes `other`'s format, as in
    /// Kubernetes' `Add`.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        Some(Self {
            nanos: self.nanos.checked_add(other.nanos)?,
            format: if self.nanos == 0 {
                other.format
            } else {
                self.format
            },
        })
    }

    /// `self - other`, `None` on overflow. A zero `self` takes `other`'s format, as in
    /// Kubernetes' `Sub`.
    pub fn checked_sub(self, other: Self) -> Option<Self> {
        Some(Self {
            nanos: self.nanos.checked_sub(other.nanos)?,
            format: if self.nanos == 0 {
                other.format
            } else {
                self.format
            },
        })
    }
}

/// The parts of a quantity string, as Kubernetes' scanner splits it.
struct Scanned<'a> {
    negative: bool,
    /// Integer digits without leading zeros (`"0"` when there are none).
    num: &'a [u8],
    /// Fraction digits.
    denom: &'a [u8],
    suffix: &'a [u8],
}

/// Kubernetes' `parseQuantityString`: sign, integer digits, `.` and fraction digits, then
/// suffix letters (`eEinumkKMGTP`), an optional sign and digits; anything after is refused.
fn scan(text: &[u8]) -> Result<Scanned<'_>, QuantityError> {
    const ZERO: &[u8] = b"0";
    let end = text.len();
    let mut pos = 0;
    let negative = match text.first() {
        Some(b'-') => {
            pos += 1;
            true
        }
        Some(b'+') => {
            pos += 1;
            false
        }
        _ => false,
    };
    let digits_from = |start: usize| {
        text[start..]
            .iter()
            .position(|c| !c.is_ascii_digit())
            .map_or(end, |n| start + n)
    };
    pos += text[pos..].iter().take_while(|c| **c == b'0').count();
    if pos == end {
        // Only a sign and zeros (or nothing after the sign): zero.
        return Ok(Scanned {
            negative,
            num: ZERO,
            denom: &[],
            suffix: &[],
        });
    }
    let num_end = digits_from(pos);
    let num = if num_end == pos {
        ZERO
    } else {
        &text[pos..num_end]
    };
    pos = num_end;
    let mut denom: &[u8] = &[];
    if text.get(pos) == Some(&b'.') {
        let denom_end = digits_from(pos + 1);
        denom = &text[pos + 1..denom_end];
        pos = denom_end;
    }
    let suffix_start = pos;
    pos += text[pos..]
        .iter()
        .take_while(|c| b"eEinumkKMGTP".contains(c))
        .count();
    if matches!(text.get(pos), Some(b'-' | b'+')) {
        pos += 1;
    }
    if digits_from(pos) != end {
        return Err(QuantityError::Format);
    }
    Ok(Scanned {
        negative,
        num,
        denom,
        suffix: &text[suffix_start..],
    })
}

/// Kubernetes' suffix table: (base, exponent, format). Decimal exponents must fit an `i32`
/// other than its minimum, as Kubernetes now requires.
fn interpret(suffix: &[u8]) -> Result<(u32, i32, Format), QuantityError> {
    let decimal = |exponent| Ok((10, exponent, Format::DecimalSI));
    let binary = |exponent| Ok((2, exponent, Format::BinarySI));
    match suffix {
        b"" => decimal(0),
        b"n" => decimal(-9),
        b"u" => decimal(-6),
        b"m" => decimal(-3),
        b"k" => decimal(3),
        b"M" => decimal(6),
        b"G" => decimal(9),
        b"T" => decimal(12),
        b"P" => decimal(15),
        b"E" => decimal(18),
        b"Ki" => binary(10),
        b"Mi" => binary(20),
        b"Gi" => binary(30),
        b"Ti" => binary(40),
        b"Pi" => binary(50),
        b"Ei" => binary(60),
        [b'e' | b'E', exponent @ ..] if !exponent.is_empty() => std::str::from_utf8(exponent)
            .ok()
            .and_then(|e| e.parse::<i64>().ok())
            .and_then(|e| i32::try_from(e).ok())
            .filter(|e| *e != i32::MIN)
            .map(|e| (10, e, Format::DecimalExponent))
            .ok_or(QuantityError::Suffix),
        _ => Err(QuantityError::Suffix),
    }
}

/// `digits` (most significant first) times `factor`, in place.
fn multiply_digits(digits: &mut Vec<u8>, factor: u32) {
    let mut carry = 0u32;
    for d in digits.iter_mut().rev() {
        let product = u32::from(*d) * factor + carry;
        *d = (product % 10) as u8;
        carry = product / 10;
    }
    while carry > 0 {
        digits.insert(0, (carry % 10) as u8);
        carry /= 10;
    }
}

/// ⌈digits · 10^shift⌉ for a non-negative decimal `digits`; `None` if it exceeds `u128`.
fn nanos_rounded_up(digits: &[u8], shift: i64) -> Option<u128> {
    let first = digits.iter().position(|d| *d != 0);
    let Some(first) = first else {
        return Some(0);
    };
    let digits = &digits[first..];
    let to_int = |digits: &[u8]| {
        digits
            .iter()
            .try_fold(0u128, |n, d| n.checked_mul(10)?.checked_add(u128::from(*d)))
    };
    if shift >= 0 {
        let factor = 10u128.checked_pow(u32::try_from(shift).ok()?)?;
        return to_int(digits)?.checked_mul(factor);
    }
    let dropped = usize::try_from(shift.unsigned_abs()).unwrap_or(usize::MAX);
    if dropped >= digits.len() {
        // A non-zero value below one nano-unit.
        return Some(1);
    }
    let (kept, rest) = digits.split_at(digits.len() - dropped);
    let round_up = u128::from(rest.iter().any(|d| *d != 0));
    to_int(kept)?.checked_add(round_up)
}

/// `n / d` rounded away from zero (`d > 0`).
fn div_away_from_zero(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d == 0 {
        q
    } else if n > 0 {
        q + 1
    } else {
        q - 1
    }
}

fn saturate(n: i128) -> i64 {
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl TryFrom<&k8s_openapi::apimachinery::pkg::api::resource::Quantity> for Quantity {
    type Error = QuantityError;

    /// A quantity from an object: surrounding whitespace is ignored first, as Kubernetes'
    /// JSON decoding does.
    fn try_from(
        quantity: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    ) -> Result<Self, Self::Error> {
        Self::parse_trimmed(&quantity.0)
    }
}

impl From<Quantity> for k8s_openapi::apimachinery::pkg::api::resource::Quantity {
    fn from(quantity: Quantity) -> Self {
        Self(quantity.to_string())
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl std::hash::Hash for Quantity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.nanos.hash(state);
    }
}

/// The canonical form (Kubernetes' `CanonicalizeBytes`): no fraction digits, the largest
/// suffix of the quantity's format that keeps the value exact. BinarySI values below 1024 in
/// magnitude or with a fraction show as DecimalSI; DecimalSI beyond `E` and BinarySI beyond
/// `Ei` fall back to a decimal exponent, as in current Kubernetes.
impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let magnitude = self.nanos.unsigned_abs();
        let nano = NANO as u128;
        if self.format == Format::BinarySI
            && magnitude >= 1024 * nano
            && magnitude.is_multiple_of(nano)
        {
            let mut units = magnitude / nano;
            let mut exponent = 0;
            while units.is_multiple_of(1024) {
                units /= 1024;
                exponent += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"].get(exponent);
            if let Some(suffix) = suffix {
                return write!(f, "{sign}{units}{suffix}");
            }
        }
        // Base 10: move factors of ten into the exponent, then lower it to a multiple of 3.
        let mut mantissa = magnitude;
        let mut exponent: i32 = -9;
        while mantissa.is_multiple_of(10) {
            mantissa /= 10;
            exponent += 1;
        }
        while exponent.rem_euclid(3) != 0 {
            mantissa *= 10;
            exponent -= 1;
        }
        let si = match exponent {
            -9 => Some("n"),
            -6 => Some("u"),
            -3 => Some("m"),
            0 => Some(""),
            3 => Some("k"),
            6 => Some("M"),
            9 => Some("G"),
            12 => Some("T"),
            15 => Some("P"),
            18 => Some("E"),
            _ => None,
        };
        match (self.format, si) {
            (Format::DecimalExponent, _) | (_, None) if exponent != 0 => {
                write!(f, "{sign}{mantissa}e{exponent}")
            }
            (_, suffix) => write!(f, "{sign}{mantissa}{}", suffix.unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `mantissa · 10^exponent`, for expectations written like quantity_test.go's `decQuantity`.
    fn dec(mantissa: i128, exponent: i32) -> i128 {
        let shift = exponent + 9;
        if shift >= 0 {
            mantissa * 10i128.pow(shift as u32)
        } else {
            mantissa / 10i128.pow(shift.unsigned_abs())
        }
    }

    fn parse(text: &str) -> Quantity {
        Quantity::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    /// The `TestQuantityParse` table of Kubernetes' quantity_test.go, plus each entry with an
    /// explicit `-` and `+`.
    #[test]
    fn parses_like_kubernetes() {
        use Format::*;
        let max = i128::from(i64::MAX) * NANO;
        let table: &[(&str, i128, Format)] = &[
            ("0", 0, DecimalSI),
            ("0n", 0, DecimalSI),
            ("0u", 0, DecimalSI),
            ("0m", 0, DecimalSI),
            ("0Ki", 0, BinarySI),
            ("0k", 0, DecimalSI),
            ("0Mi", 0, BinarySI),
            ("0M", 0, DecimalSI),
            ("0Gi", 0, BinarySI),
            ("0G", 0, DecimalSI),
            ("0Ti", 0, BinarySI),
            ("0T", 0, DecimalSI),
            ("1", dec(1, 0), DecimalSI),
            ("1Ki", dec(1024, 0), BinarySI),
            ("8Ki", dec(8 * 1024, 0), BinarySI),
            ("7Mi", dec(7 << 20, 0), BinarySI),
            ("6Gi", dec(6 << 30, 0), BinarySI),
            ("5Ti", dec(5 << 40, 0), BinarySI),
            ("4Pi", dec(4 << 50, 0), BinarySI),
            ("3Ei", dec(3 << 60, 0), BinarySI),
            ("10Ti", dec(10 << 40, 0), BinarySI),
            ("100Ti", dec(100 << 40, 0), BinarySI),
            ("5n", dec(5, -9), DecimalSI),
            ("4u", dec(4, -6), DecimalSI),
            ("3m", dec(3, -3), DecimalSI),
            ("9", dec(9, 0), DecimalSI),
            ("8k", dec(8, 3), DecimalSI),
            ("50k", dec(5, 4), DecimalSI),
            ("7M", dec(7, 6), DecimalSI),
            ("6G", dec(6, 9), DecimalSI),
            ("5T", dec(5, 12), DecimalSI),
            ("40T", dec(4, 13), DecimalSI),
            ("300T", dec(3, 14), DecimalSI),
            ("2P", dec(2, 15), DecimalSI),
            ("1E", dec(1, 18), DecimalSI),
            ("1E-3", dec(1, -3), DecimalExponent),
            ("1e3", dec(1, 3), DecimalExponent),
            ("1E6", dec(1, 6), DecimalExponent),
            ("1e9", dec(1, 9), DecimalExponent),
            ("1E12", dec(1, 12), DecimalExponent),
            ("1e15", dec(1, 15), DecimalExponent),
            ("1E18", dec(1, 18), DecimalExponent),
            ("1e14", dec(1, 14), DecimalExponent),
            ("1e13", dec(1, 13), DecimalExponent),
            ("100.035k", dec(100035, 0), DecimalSI),
            ("0.001", dec(1, -3), DecimalSI),
            ("0.0005k", dec(5, -1), DecimalSI),
            ("0.005", dec(5, -3), DecimalSI),
            ("0.05", dec(5, -2), DecimalSI),
            ("0.5", dec(5, -1), DecimalSI),
            ("0.00050k", dec(5, -1), DecimalSI),
            ("0.00500", dec(5, -3), DecimalSI),
            ("0.05000", dec(5, -2), DecimalSI),
            ("0.50000", dec(5, -1), DecimalSI),
            ("0.5e0", dec(5, -1), DecimalExponent),
            ("0.5e-1", dec(5, -2), DecimalExponent),
            ("0.5e-2", dec(5, -3), DecimalExponent),
            ("10.035M", dec(10035, 3), DecimalSI),
            ("1.2e3", dec(12, 2), DecimalExponent),
            ("1.3E+6", dec(13, 5), DecimalExponent),
            ("1.40e9", dec(14, 8), DecimalExponent),
            ("1.53E12", dec(153, 10), DecimalExponent),
            ("1.6e15", dec(16, 14), DecimalExponent),
            ("1.7E18", dec(17, 17), DecimalExponent),
            ("9.01", dec(901, -2), DecimalSI),
            ("8.1k", dec(81, 2), DecimalSI),
            ("7.123456M", dec(7123456, 0), DecimalSI),
            ("6.987654321G", dec(6987654321, 0), DecimalSI),
            ("5.444T", dec(5444, 9), DecimalSI),
            ("40.1T", dec(401, 11), DecimalSI),
            ("300.2T", dec(3002, 11), DecimalSI),
            ("2.5P", dec(25, 14), DecimalSI),
            ("1.01E", dec(101, 16), DecimalSI),
            // Rounded up to the next nano-unit, or capped.
            ("3.001n", dec(4, -9), DecimalSI),
            ("1.1E-9", dec(2, -9), DecimalExponent),
            ("0.0000000001", dec(1, -9), DecimalSI),
            ("0.0000000005", dec(1, -9), DecimalSI),
            ("0.00000000050", dec(1, -9), DecimalSI),
            ("0.5e-9", dec(1, -9), DecimalExponent),
            ("0.9n", dec(1, -9), DecimalSI),
            ("0.00000012345", dec(124, -9), DecimalSI),
            ("0.00000012354", dec(124, -9), DecimalSI),
            ("9Ei", max, BinarySI),
            ("9223372036854775807Ki", max, BinarySI),
            ("12E", dec(12, 18), DecimalSI),
            // Fractional binary quantities.
            ("100.035Ki", dec(10243584, -2), BinarySI),
            ("0.5Mi", dec(512 * 1024, 0), BinarySI),
            ("0.05Gi", dec(536870912, -1), BinarySI),
            ("0.025Ti", dec(274877906944, -1), BinarySI),
            // "Things written by trolls".
            ("0.000000000001Ki", dec(2, -9), DecimalSI),
            (".001", dec(1, -3), DecimalSI),
            (".0001k", dec(100, -3), DecimalSI),
            ("1.", dec(1, 0), DecimalSI),
            ("1.G", dec(1, 9), DecimalSI),
            // What the scanner accepts although the regular expression in the message does not.
            (".", 0, DecimalSI),
            ("Ki", 0, BinarySI),
        ];
        assert_eq!(parse("-").nanos(), 0, "a lone sign is zero");
        for &(text, nanos, format) in table {
            for (prefix, sign) in [("", 1), ("-", -1), ("+", 1)] {
                let input = format!("{prefix}{text}");
                let q = parse(&input);
                assert_eq!((q.nanos(), q.format()), (sign * nanos, format), "{input}");
            }
        }
    }

    #[test]
    fn refuses_what_kubernetes_refuses() {
        let format = QuantityError::Format;
        let suffix = QuantityError::Suffix;
        for (text, error) in [
            ("", &format),
            ("1.1.M", &format),
            ("1+1.0M", &format),
            ("0.1mi", &suffix),
            ("0.1am", &format),
            ("aoeu", &format),
            (".5i", &suffix),
            ("1i", &suffix),
            ("-3.01i", &suffix),
            ("-3.01e-", &suffix),
            ("1e4294967297", &suffix),
            ("1E-2147483648", &suffix),
            (" 1", &format),
            ("1 ", &format),
            ("1K", &suffix),
            ("1KiB", &format),
            ("+-", &suffix),
            ("Non-Numeric", &format),
        ] {
            assert_eq!(Quantity::parse(text).as_ref(), Err(error), "{text:?}");
        }
        assert_eq!(
            QuantityError::Format.to_string(),
            "quantities must match the regular expression \
             '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        );
        assert_eq!(
            QuantityError::Suffix.to_string(),
            "unable to parse quantity's suffix"
        );
        assert!(matches!(
            Quantity::parse("1e30"),
            Err(QuantityError::TooLarge { .. })
        ));
        assert_eq!(parse("1e-2147483647").nanos(), 1, "tiny values round up");
        assert_eq!(parse("0e2147483647").nanos(), 0);
    }

    /// `TestQuantityString`, `TestQuantityParseEmit` and `TestBinarySIZeroExponentString`.
    #[test]
    fn canonical_form() {
        use Format::*;
        let q = |nanos, format| Quantity { nanos, format };
        for (quantity, expected) in [
            (q(dec(1 << 30, 0), BinarySI), "1Gi"),
            (q(dec(300 << 20, 0), BinarySI), "300Mi"),
            (q(dec(6 * 1024, 0), BinarySI), "6Ki"),
            (q(dec(1001 << 30, 0), BinarySI), "1001Gi"),
            (q(dec(1 << 40, 0), BinarySI), "1Ti"),
            (q(dec(5, 0), BinarySI), "5"),
            (q(dec(500, -3), BinarySI), "500m"),
            (q(dec(1, 9), DecimalSI), "1G"),
            (q(dec(1000, 6), DecimalSI), "1G"),
            (q(dec(1, -3), DecimalSI), "1m"),
            (q(dec(80, -3), DecimalSI), "80m"),
            (q(dec(1080, -3), DecimalSI), "1080m"),
            (q(dec(108, -2), DecimalSI), "1080m"),
            (q(dec(300, 6), DecimalSI), "300M"),
            (q(dec(1, 12), DecimalSI), "1T"),
            (q(dec(1, 18), DecimalSI), "1E"),
            (q(dec(1, 21), DecimalSI), "1e21"),
            (q(dec(5, 21), DecimalSI), "5e21"),
            (q(dec(1, 24), DecimalSI), "1e24"),
            (q(dec(1234567, 6), DecimalSI), "1234567M"),
            (q(dec(1234567, -3), BinarySI), "1234567m"),
            (q(dec(3, 3), DecimalSI), "3k"),
            (q(dec(1025, 0), BinarySI), "1025"),
            (q(0, DecimalSI), "0"),
            (q(0, BinarySI), "0"),
            (q(dec(1, 9), DecimalExponent), "1e9"),
            (q(dec(1, -3), DecimalExponent), "1e-3"),
            (q(dec(1, -9), DecimalExponent), "1e-9"),
            (q(dec(80, -3), DecimalExponent), "80e-3"),
            (q(dec(300, 6), DecimalExponent), "300e6"),
            (q(dec(3, 3), DecimalExponent), "3e3"),
            (q(0, DecimalExponent), "0"),
            (q(dec(1, -9), DecimalSI), "1n"),
            (q(dec(80, -9), DecimalSI), "80n"),
            (q(dec(1080, -9), DecimalSI), "1080n"),
            (q(dec(1, -6), DecimalSI), "1u"),
            (q(dec(1080, -6), DecimalSI), "1080u"),
            (q(dec(2000, 0), BinarySI), "2000"),
            (q(dec(1 << 70, 0), BinarySI), "1180591620717411303424"),
        ] {
            assert_eq!(quantity.to_string(), expected, "{quantity:?}");
            if quantity.nanos != 0 {
                let negative = Quantity {
                    nanos: -quantity.nanos,
                    ..quantity
                };
                assert_eq!(negative.to_string(), format!("-{expected}"));
            }
            assert_eq!(parse(expected), quantity, "{expected} parses back");
        }
        for (text, expected) in [
            ("1Ki", "1Ki"),
            ("1024Mi", "1Gi"),
            ("1000M", "1G"),
            (".001Ki", "1024m"),
            (".000001Ki", "1024u"),
            (".000000001Ki", "1024n"),
            (".000000000001Ki", "2n"),
            ("1.5Gi", "1536Mi"),
            ("1.5", "1500m"),
            ("0.1", "100m"),
            ("+100m", "100m"),
            ("0100", "100"),
            ("1024Ki", "1Mi"),
            ("129e6", "129e6"),
            ("12e5", "1200e3"),
            ("1000E", "1e21"),
        ] {
            assert_eq!(parse(text).to_string(), expected, "{text}");
        }
    }

    /// `TestNegativeValueRoundsAwayFromZero` and `TestScaledValue`'s whole and milli cases.
    #[test]
    fn value_and_milli_value_round_away_from_zero() {
        for (text, value, milli) in [
            ("-.484785E-7466", -1, -1),
            (".484785E-7466", 1, 1),
            ("-.484785E-1", -1, -49),
            (".484785E-1", 1, 49),
            ("-0.0005", -1, -1),
            ("0.0005", 1, 1),
            ("-1500m", -2, -1500),
            ("1500m", 2, 1500),
            ("-9.5000000001Gi", -10200547329, -10200547328108),
            ("9.5000000001Gi", 10200547329, 10200547328108),
            ("-1", -1, -1000),
            ("1", 1, 1000),
            ("0", 0, 0),
            ("1n", 1, 1),
            ("1u", 1, 1),
            ("1m", 1, 1),
            ("100m", 1, 100),
            ("128Mi", 128 << 20, (128 << 20) * 1000),
            ("9Ei", i64::MAX, i64::MAX),
        ] {
            let q = parse(text);
            assert_eq!((q.value(), q.milli_value()), (value, milli), "{text}");
        }
    }

    /// `TestQuantityCmp`, and arithmetic keeping the first non-zero operand's format.
    #[test]
    fn compares_and_adds_exactly() {
        assert_eq!(parse("0").cmp(&parse("0")), Ordering::Equal);
        assert_eq!(parse("100m").cmp(&parse("50m")), Ordering::Greater);
        assert_eq!(parse("50m").cmp(&parse("100m")), Ordering::Less);
        assert_eq!(parse("10000T").cmp(&parse("100Gi")), Ordering::Greater);
        assert_eq!(parse("1Ki"), parse("1024"), "equality ignores the format");
        let sum = parse("0.1").checked_add(parse("0.2")).expect("no overflow");
        assert_eq!(sum, parse("300m"), "no float rounding");
        for (a, b, sum) in [
            ("100m", "0", "100m"),
            ("0", "1Gi", "1Gi"),
            ("1Gi", "512Mi", "1536Mi"),
        ] {
            let total = parse(a).checked_add(parse(b)).expect("no overflow");
            assert_eq!(total.to_string(), sum, "{a} + {b}");
        }
        let difference = parse("0").checked_sub(parse("1Gi")).expect("no overflow");
        assert_eq!(difference.to_string(), "-1Gi");
        let huge = Quantity {
            nanos: i128::MAX,
            format: Format::DecimalSI,
        };
        assert_eq!(huge.checked_add(parse("1n")), None);
    }

    #[test]
    fn sign_and_field_text() {
        for (text, negative, zero) in [
            ("-1", true, false),
            ("-1n", true, false),
            ("-0", false, true),
            ("0", false, true),
            ("1m", false, false),
            ("-.0000000001", true, false),
        ] {
            let q = parse(text);
            assert_eq!((q.is_negative(), q.is_zero()), (negative, zero), "{text}");
        }
        assert_eq!(Quantity::parse_trimmed(" \t1.5Gi\n"), Ok(parse("1536Mi")));
        assert_eq!(Quantity::parse(" 1"), Err(QuantityError::Format));
        assert_eq!(Quantity::parse_trimmed("  "), Err(QuantityError::Format));
    }

    #[test]
    fn converts_from_and_to_object_quantities() {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Object;
        let q = Quantity::try_from(&Object(" 1.5Gi ".into())).expect("whitespace is trimmed");
        assert_eq!(q.value(), 1536 << 20);
        assert_eq!(Object::from(q), Object("1536Mi".into()));
        assert_eq!(Quantity::new(2, Format::BinarySI).to_string(), "2");
        assert_eq!(
            Quantity::from_milli(1500, Format::DecimalSI).to_string(),
            "1500m"
        );
    }
}
