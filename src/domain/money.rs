//! Amounts of money as integers of a currency's minor unit (cents, pence, yen).
//! Floats never touch money: 0.1 + 0.2 is not 0.3 in binary floating point, and
//! an invoice must add up to the cent.

use std::fmt;

use crate::error::{Error, Result};

/// The currencies orgd bills in, with their ISO 4217 minor-unit exponent (how
/// many digits follow the decimal point). Payment processors may differ from
/// ISO for a few (Stripe, for one, charges HUF and TWD in whole units); convert
/// at that edge, not here.
const CURRENCIES: &[(&str, u32)] = &[
    ("AED", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("BDT", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("MXN", 2),
    ("MYR", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PEN", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("QAR", 2),
    ("RON", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("VND", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("ZAR", 2),
];

/// The largest amount of a voucher or a usage charge (the database checks it
/// too), so that no sum of credits or of an invoice's charges overflows.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000;

/// An ISO 4217 alphabetic currency code orgd supports, stored uppercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(&'static str);

impl Currency {
    /// Parses a code such as "usd" or "EUR" (surrounding spaces and case ignored).
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        let code = raw.trim().to_ascii_uppercase();
        match CURRENCIES.iter().find(|(c, _)| *c == code) {
            Some((c, _)) => Ok(Currency(c)),
            // Only a code-shaped value is repeated: anything else may be data
            // that was typed into the wrong field.
            None if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) => {
                Err(Error::invalid(
                    field,
                    format!(
                        "{} is not a currency orgd bills in: use an ISO 4217 code such as USD, EUR or JPY",
                        super::quoted(&code)
                    ),
                ))
            }
            None => Err(Error::invalid(
                field,
                "a currency is a three-letter ISO 4217 code such as USD, EUR or JPY",
            )),
        }
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }

    /// Digits after the decimal point: 2 for USD (cents), 0 for JPY, 3 for KWD.
    pub fn exponent(&self) -> u32 {
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == self.0)
            .map(|(_, e)| *e)
            .expect("a Currency is only made from the table")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// An amount in a currency's minor unit: `Money::new(1234, usd)` is USD 12.34.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(minor: i64, currency: Currency) -> Self {
        Money { minor, currency }
    }

    /// The sum, or `None` when the currencies differ or the sum overflows.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        Some(Money::new(
            self.minor.checked_add(other.minor)?,
            self.currency,
        ))
    }

    /// The difference, or `None` when the currencies differ or it overflows.
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        Some(Money::new(
            self.minor.checked_sub(other.minor)?,
            self.currency,
        ))
    }

    /// The amount for people: the code, a space, then the amount with as many
    /// decimals as the currency has ("USD 12.34", "JPY 1200", "KWD 1.234"). A
    /// negative amount puts its sign on the number, "USD -1.00", so the code
    /// stays a label in front of a signed number. No thousands separators: they
    /// differ by locale, and a plain number is unambiguous everywhere.
    pub fn format(&self) -> String {
        let sign = if self.minor < 0 { "-" } else { "" };
        // unsigned_abs: i64::MIN has no positive i64 counterpart.
        let magnitude = self.minor.unsigned_abs();
        let code = self.currency.as_str();
        match self.currency.exponent() {
            0 => format!("{code} {sign}{magnitude}"),
            exponent => {
                let unit = 10u64.pow(exponent);
                let (whole, fraction) = (magnitude / unit, magnitude % unit);
                let width = exponent as usize;
                format!("{code} {sign}{whole}.{fraction:0width$}")
            }
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format())
    }
}

/// `amount_minor * used / total` for a prorated line item (a seat added for
/// `used` of a period's `total` seconds), computed in i128 so the product
/// cannot overflow. It rounds to the nearest minor unit, halves away from
/// zero: half a cent rounds up for a charge and the matching credit rounds to
/// the same amount negated, so a charge and its refund cancel exactly.
///
/// # Panics
///
/// If `total` is not positive or `used` is outside `0..=total`: a usage outside
/// its period is a bug upstream, and a silently wrong invoice is worse.
pub fn prorate(amount_minor: i64, used: i64, total: i64) -> i64 {
    assert!(total > 0, "prorate: the period length must be positive");
    assert!(
        (0..=total).contains(&used),
        "prorate: the used part must lie within the period"
    );
    let numerator = i128::from(amount_minor) * i128::from(used);
    let total = i128::from(total);
    let (quotient, remainder) = (numerator / total, numerator % total);
    let rounded = if 2 * remainder.abs() >= total {
        quotient + numerator.signum()
    } else {
        quotient
    };
    // |rounded| <= |amount_minor| because used <= total, so it fits.
    i64::try_from(rounded).expect("a prorated amount is no larger than the amount")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(code: &str) -> Currency {
        Currency::parse("c", code).unwrap()
    }

    #[test]
    fn currencies_parse_case_insensitively() {
        assert_eq!(cur(" usd ").as_str(), "USD");
        assert_eq!(cur("Eur"), cur("EUR"));
        assert_eq!(cur("JPY").exponent(), 0);
        assert_eq!(cur("KRW").exponent(), 0);
        assert_eq!(cur("USD").exponent(), 2);
        assert_eq!(cur("KWD").exponent(), 3);
        assert_eq!(cur("BHD").exponent(), 3);
        for code in "USD EUR GBP JPY CHF CAD AUD NZD SEK NOK DKK PLN CZK HUF INR CNY HKD SGD KRW BRL MXN ZAR TRY ILS AED SAR THB MYR IDR PHP TWD".split(' ') {
            assert_eq!(cur(code).as_str(), code);
        }
        for bad in ["", "US", "USDD", "XXX", "HRK", "12$", "U D"] {
            assert!(Currency::parse("c", bad).is_err(), "{bad:?}");
        }
        let err = Currency::parse("c", "4242 4242 4242 4242").unwrap_err();
        assert!(!err.to_string().contains("4242"), "{err}");
        assert!(
            Currency::parse("c", "xyz")
                .unwrap_err()
                .to_string()
                .contains("'XYZ'")
        );
    }

    #[test]
    fn the_table_is_sorted_and_unique() {
        assert!(CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(CURRENCIES.iter().all(|(c, e)| c.len() == 3 && *e <= 3));
    }

    #[test]
    fn formats_with_the_currency_exponent() {
        let m = |minor, code| Money::new(minor, cur(code)).format();
        assert_eq!(m(1234, "USD"), "USD 12.34");
        assert_eq!(m(5, "USD"), "USD 0.05");
        assert_eq!(m(0, "EUR"), "EUR 0.00");
        assert_eq!(m(1200, "JPY"), "JPY 1200");
        assert_eq!(m(1234, "KWD"), "KWD 1.234");
        assert_eq!(m(7, "KWD"), "KWD 0.007");
        assert_eq!(m(-100, "USD"), "USD -1.00");
        assert_eq!(m(-5, "USD"), "USD -0.05");
        assert_eq!(m(-1200, "JPY"), "JPY -1200");
        assert_eq!(m(i64::MIN, "USD"), "USD -92233720368547758.08");
        assert_eq!(m(i64::MAX, "USD"), "USD 92233720368547758.07");
        assert_eq!(Money::new(1234, cur("USD")).to_string(), "USD 12.34");
    }

    #[test]
    fn arithmetic_needs_one_currency_and_no_overflow() {
        let usd = |m| Money::new(m, cur("USD"));
        assert_eq!(usd(150).checked_add(usd(250)), Some(usd(400)));
        assert_eq!(usd(150).checked_sub(usd(250)), Some(usd(-100)));
        let eur = Money::new(1, cur("EUR"));
        assert_eq!(usd(1).checked_add(eur), None);
        assert_eq!(usd(1).checked_sub(eur), None);
        assert_eq!(usd(i64::MAX).checked_add(usd(1)), None);
        assert_eq!(usd(i64::MIN).checked_sub(usd(1)), None);
    }

    #[test]
    fn prorates_rounding_half_away_from_zero() {
        assert_eq!(prorate(1000, 15, 30), 500);
        assert_eq!(prorate(1000, 0, 30), 0);
        assert_eq!(prorate(1000, 30, 30), 1000);
        assert_eq!(prorate(1000, 1, 3), 333); // 333.33…
        assert_eq!(prorate(1000, 2, 3), 667); // 666.66…
        assert_eq!(prorate(1, 1, 2), 1); // exactly half rounds up
        assert_eq!(prorate(3, 1, 2), 2); // 1.5
        assert_eq!(prorate(-1, 1, 2), -1); // a credit mirrors its charge
        assert_eq!(prorate(-1000, 2, 3), -667);
        assert_eq!(prorate(999, 1, 4), 250); // 249.75
        assert_eq!(prorate(998, 1, 4), 250); // 249.5
        assert_eq!(prorate(997, 1, 4), 249); // 249.25
        // The product needs more than 64 bits.
        assert_eq!(prorate(i64::MAX, i64::MAX, i64::MAX), i64::MAX);
        assert_eq!(prorate(i64::MIN, i64::MAX, i64::MAX), i64::MIN);
        assert_eq!(
            prorate(i64::MAX, 2_592_000 / 2, 2_592_000),
            i64::MAX / 2 + 1
        );
        for (amount, used, total) in [(1999, 7, 31), (12345, 86_399, 2_678_400), (1, 1, 3)] {
            assert_eq!(prorate(-amount, used, total), -prorate(amount, used, total));
        }
    }

    #[test]
    #[should_panic(expected = "positive")]
    fn prorate_refuses_an_empty_period() {
        prorate(100, 0, 0);
    }

    #[test]
    #[should_panic(expected = "within the period")]
    fn prorate_refuses_usage_beyond_the_period() {
        prorate(100, 31, 30);
    }
}
