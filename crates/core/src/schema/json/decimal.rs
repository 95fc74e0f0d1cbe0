//! Decimal text: parsing it, rescaling it to a scale and precision, two's-complement bytes.

use std::borrow::Cow;

use serde_json::Value as Json;

use super::path::{Path, Res, kind};

/// Most digits of a decimal's unscaled value, whatever the schema's precision.
const MAX_DECIMAL_DIGITS: usize = 10_000;

/// The textual form of a decimal given as a JSON string or number.
pub(super) fn decimal_text<'j>(json: &'j Json, label: &str, path: &Path<'_>) -> Res<Cow<'j, str>> {
    match json {
        Json::String(s) => Ok(Cow::Borrowed(s)),
        Json::Number(n) => Ok(Cow::Owned(n.to_string())),
        _ => Err(path.err(format!(
            "expected {label} (string or number), got {}",
            kind(json)
        ))),
    }
}

/// A decimal literal: `±digits * 10^exp`, `digits` without leading zeros (empty for zero).
pub(super) struct DecimalLit {
    pub(super) negative: bool,
    pub(super) digits: Vec<u8>,
    pub(super) exp: i64,
}

pub(super) fn parse_decimal(s: &str) -> Option<DecimalLit> {
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i32>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = || int.bytes().chain(frac.bytes());
    if (int.is_empty() && frac.is_empty()) || !all().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = all().map(|b| b - b'0').skip_while(|&d| d == 0).collect();
    let exp = i64::from(exp) - i64::try_from(frac.len()).ok()?;
    Some(DecimalLit {
        negative,
        digits,
        exp,
    })
}

/// Why [`rescale`] refused a decimal; displayed after `decimal <text> `.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum RescaleError {
    /// Nonzero digits beyond the scale (rounding would lose them).
    #[error("has more than {scale} fractional digits")]
    FractionalDigits {
        /// The scale.
        scale: usize,
    },
    /// More digits than the precision (or `MAX_DECIMAL_DIGITS`) at the scale.
    #[error("exceeds precision {precision} at scale {scale}")]
    Precision {
        /// The precision.
        precision: usize,
        /// The scale.
        scale: usize,
    },
}

/// The unscaled digits of `digits * 10^exp` at `scale`, checked against `precision`.
pub(super) fn rescale(
    mut digits: Vec<u8>,
    exp: i64,
    precision: usize,
    scale: usize,
) -> Result<Vec<u8>, RescaleError> {
    let shift = exp.saturating_add(i64::try_from(scale).unwrap_or(i64::MAX));
    let too_many = RescaleError::Precision { precision, scale };
    if shift < 0 {
        let keep = digits
            .len()
            .saturating_sub(usize::try_from(-shift).unwrap_or(usize::MAX));
        if digits[keep..].iter().any(|&d| d != 0) {
            return Err(RescaleError::FractionalDigits { scale });
        }
        digits.truncate(keep);
    } else if !digits.is_empty() {
        let total = digits
            .len()
            .saturating_add(usize::try_from(shift).unwrap_or(usize::MAX));
        if total > MAX_DECIMAL_DIGITS {
            return Err(too_many);
        }
        digits.resize(total, 0);
    }
    if digits.len() > precision {
        return Err(too_many);
    }
    Ok(digits)
}

/// Why [`decimal128_from_text`] refused a decimal's text; every variant but `NegativeScale`
/// holds the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// Not a decimal literal.
    #[error("invalid decimal {text:?}")]
    Invalid {
        /// The text.
        text: String,
    },
    /// The target type has a negative scale, which is not supported.
    #[error("negative scale {scale}")]
    NegativeScale {
        /// The scale.
        scale: i8,
    },
    /// Nonzero digits beyond the scale: the value is never rounded.
    #[error("decimal {text} has more than {scale} fractional digits")]
    TooManyFractionalDigits {
        /// The text.
        text: String,
        /// The scale.
        scale: usize,
    },
    /// More digits than the precision holds at the scale.
    #[error("decimal {text} exceeds precision {precision} at scale {scale}")]
    ExceedsPrecision {
        /// The text.
        text: String,
        /// The precision (at most 38).
        precision: usize,
        /// The scale.
        scale: usize,
    },
}

/// The unscaled value of a decimal's text (`-12.5`, `1e3`, `+0.125E-1`) at `scale`, checked
/// against `precision` (at most 38, as Arrow's `Decimal128` holds): the rule JSON events follow,
/// for text read elsewhere (file rows). Never rounds: more fractional digits than the scale is an
/// error, as is any exponent the precision cannot hold.
pub fn decimal128_from_text(text: &str, precision: u8, scale: i8) -> Result<i128, DecimalError> {
    let lit = parse_decimal(text.trim()).ok_or_else(|| DecimalError::Invalid {
        text: text.to_string(),
    })?;
    let scale = usize::try_from(scale).map_err(|_| DecimalError::NegativeScale { scale })?;
    let precision = usize::from(precision.min(38));
    let digits = rescale(lit.digits, lit.exp, precision, scale).map_err(|e| match e {
        RescaleError::FractionalDigits { scale } => DecimalError::TooManyFractionalDigits {
            text: text.to_string(),
            scale,
        },
        RescaleError::Precision { precision, scale } => DecimalError::ExceedsPrecision {
            text: text.to_string(),
            precision,
            scale,
        },
    })?;
    // At most 38 digits: fits i128.
    let magnitude = digits.iter().fold(0i128, |v, &d| v * 10 + i128::from(d));
    Ok(if lit.negative { -magnitude } else { magnitude })
}

/// Big-endian two's-complement bytes of a decimal digit string, as few as hold the value.
pub(super) fn twos_complement(digits: &[u8], negative: bool) -> Vec<u8> {
    let mut le: Vec<u8> = Vec::new(); // the magnitude, little-endian base 256
    for &d in digits {
        let mut carry = u16::from(d);
        for byte in le.iter_mut() {
            let v = u16::from(*byte) * 10 + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        if carry > 0 {
            le.push(carry as u8);
        }
    }
    if negative && !le.is_empty() {
        let mut carry = true;
        for byte in le.iter_mut() {
            *byte = !*byte;
            if carry {
                (*byte, carry) = byte.overflowing_add(1);
            }
        }
        if le.last().is_some_and(|&b| b & 0x80 == 0) {
            le.push(0xff);
        }
    } else if le.last().is_none_or(|&b| b & 0x80 != 0) {
        le.push(0);
    }
    le.reverse();
    le
}
