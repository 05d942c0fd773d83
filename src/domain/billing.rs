//! The values of an organization's billing profile: who is invoiced, where.
//! Every free-text field (legal name, address lines, city, postal code, region)
//! refuses card numbers first (see [`super::card`]), so a number pasted into
//! the wrong box is neither stored nor echoed back. Codes and ids (country, tax
//! id) are not screened: a 13-digit tax id may pass the card rules.

use std::fmt;

use super::card::refuse_card_numbers;
use super::text::{is_hidden, shows_nothing};
use crate::error::{Error, Result};

/// Every officially assigned ISO 3166-1 alpha-2 code (249), sorted. User-assigned
/// codes such as XK (Kosovo) are not in the standard and so not here.
const COUNTRIES: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// A country as its ISO 3166-1 alpha-2 code, stored uppercase ("DE", "JP").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Country(&'static str);

impl Country {
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        let code = raw.trim().to_ascii_uppercase();
        if code.is_empty() {
            return Err(Error::invalid(
                field,
                "a country is required: use its two-letter ISO 3166-1 code such as US, DE or JP",
            ));
        }
        match COUNTRIES.binary_search(&code.as_str()) {
            Ok(i) => Ok(Country(COUNTRIES[i])),
            // Only a code-shaped value is repeated back; longer text may be a
            // country name, which the hint covers.
            Err(_) if code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()) => {
                Err(Error::invalid(
                    field,
                    format!(
                        "{} is not an ISO 3166-1 country code: use the two-letter code such as US, DE or JP",
                        super::quoted(&code)
                    ),
                ))
            }
            Err(_) => Err(Error::invalid(
                field,
                "use the country's two-letter ISO 3166-1 code such as US, DE or JP, not its name",
            )),
        }
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A postal address as printed on an invoice. `postal_code` and `region` are
/// empty where a country has none (Hong Kong has no postal codes, most countries
/// no regions on a letter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostalAddress {
    pub lines: Vec<String>,
    pub city: String,
    pub postal_code: String,
    pub region: String,
    pub country: Country,
}

const ADDRESS_LINES_MAX: usize = 3;
const ADDRESS_TEXT_MAX: usize = 100;
const POSTAL_CODE_MAX: usize = 20;

impl PostalAddress {
    /// Validates the parts of an address; errors name the request field as
    /// `{prefix}.address_lines[i]`, `{prefix}.city`, `{prefix}.postal_code`,
    /// `{prefix}.region` and `{prefix}.country`.
    pub fn parse(
        prefix: &str,
        lines: &[impl AsRef<str>],
        city: &str,
        postal_code: &str,
        region: &str,
        country: &str,
    ) -> Result<Self> {
        let field = |name: &str| {
            if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}.{name}")
            }
        };
        if lines.is_empty() {
            return Err(Error::invalid(
                field("address_lines"),
                "at least one address line is required: the street and number, or a PO box",
            ));
        }
        if lines.len() > ADDRESS_LINES_MAX {
            return Err(Error::invalid(
                field("address_lines"),
                format!(
                    "an address has at most {ADDRESS_LINES_MAX} lines, not {}: combine some of them",
                    lines.len()
                ),
            ));
        }
        let lines = lines
            .iter()
            .enumerate()
            .map(|(i, line)| {
                let field = field(&format!("address_lines[{i}]"));
                let line = plain_text(&field, "address line", line.as_ref(), ADDRESS_TEXT_MAX)?;
                if line.is_empty() {
                    return Err(Error::invalid(
                        field,
                        "an address line cannot be blank: leave it out of the list instead",
                    ));
                }
                Ok(line)
            })
            .collect::<Result<Vec<_>>>()?;

        let city_field = field("city");
        let city = plain_text(&city_field, "city", city, ADDRESS_TEXT_MAX)?;
        if city.is_empty() {
            return Err(Error::invalid(city_field, "a city is required"));
        }

        let postal_code = parse_postal_code(&field("postal_code"), postal_code)?;
        let region = plain_text(&field("region"), "region", region, ADDRESS_TEXT_MAX)?;
        let country = Country::parse(&field("country"), country)?;
        Ok(PostalAddress {
            lines,
            city,
            postal_code,
            region,
            country,
        })
    }
}

/// Postal codes are letters, digits, spaces and hyphens ("10115", "SW1A 1AA",
/// "01310-100"); stored uppercase, as they are printed.
fn parse_postal_code(field: &str, raw: &str) -> Result<String> {
    let value = raw.trim().to_ascii_uppercase();
    if value.chars().count() > POSTAL_CODE_MAX {
        return Err(Error::invalid(
            field,
            format!("a postal code is at most {POSTAL_CODE_MAX} characters"),
        ));
    }
    // A card number would pass the character rules below.
    refuse_card_numbers(field, &value)?;
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'-')
    {
        return Err(Error::invalid(
            field,
            "a postal code has only letters, digits, spaces and hyphens",
        ));
    }
    Ok(value)
}

/// A single line of text: no card number, at most `max` characters after
/// trimming, no characters that do not show as themselves. May be empty.
fn plain_text(field: &str, what: &str, raw: &str, max: usize) -> Result<String> {
    let value = raw.trim();
    // Length first: it bounds the work of the card number search.
    if value.chars().count() > max {
        return Err(Error::invalid(
            field,
            format!("the {what} is longer than {max} characters"),
        ));
    }
    refuse_card_numbers(field, value)?;
    if value.chars().any(is_hidden) {
        return Err(Error::invalid(
            field,
            format!(
                "the {what} contains control characters or line breaks: use one line of plain text"
            ),
        ));
    }
    Ok(value.to_owned())
}

const LEGAL_NAME_MAX: usize = 200;

/// The registered name of the invoiced person or company, 1–200 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegalName(String);

impl LegalName {
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        let value = plain_text(field, "legal name", raw, LEGAL_NAME_MAX)?;
        if shows_nothing(&value) {
            return Err(Error::invalid(
                field,
                "a legal name is required: the registered name of the company or person invoiced",
            ));
        }
        Ok(LegalName(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const TAX_ID_MAX: usize = 32;

/// A VAT or other tax registration number, uppercase, written as the holder
/// writes it ("DE123456789", "GB 123 4567 89"): formats differ per country, so
/// only the characters and length are checked here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaxId(String);

impl TaxId {
    /// An empty value means the customer has no tax id (not every one has).
    pub fn parse_optional(field: &str, raw: &str) -> Result<Option<Self>> {
        let value = raw.trim().to_ascii_uppercase();
        if value.is_empty() {
            return Ok(None);
        }
        if value.chars().count() > TAX_ID_MAX {
            return Err(Error::invalid(
                field,
                format!("a tax id is at most {TAX_ID_MAX} characters"),
            ));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'-' | b'.'))
        {
            return Err(Error::invalid(
                field,
                "a tax id has only letters, digits, spaces, hyphens and dots",
            ));
        }
        Ok(Some(TaxId(value)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = "4242 4242 4242 4242";

    /// The refusal is about card numbers and does not repeat the value.
    fn assert_card_refused(err: Error, field: &str) {
        let Error::InvalidArgument { field: f, message } = &err else {
            panic!("expected InvalidArgument, got {err:?}");
        };
        assert_eq!(f, field);
        assert!(message.contains("card number"), "{message}");
        assert!(!format!("{err:?}").contains("4242"), "{err:?}");
    }

    fn field_of(err: Error) -> String {
        match err {
            Error::InvalidArgument { field, .. } => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn countries() {
        assert_eq!(COUNTRIES.len(), 249);
        assert!(COUNTRIES.windows(2).all(|w| w[0] < w[1]), "sorted, unique");
        assert_eq!(Country::parse("c", " de ").unwrap().as_str(), "DE");
        for code in ["US", "GB", "JP", "AX", "BQ", "SS", "SX", "CW", "ZW", "AD"] {
            assert_eq!(Country::parse("c", code).unwrap().as_str(), code);
        }
        for bad in ["", "XK", "UK", "EU", "USA", "Germany", "D", "1A"] {
            assert!(Country::parse("c", bad).is_err(), "{bad:?}");
        }
        assert!(
            Country::parse("c", "uk")
                .unwrap_err()
                .to_string()
                .contains("'UK'")
        );
        // A code, not free text: refused as no country, and not repeated.
        let err = Country::parse("c", CARD).unwrap_err();
        assert!(!format!("{err:?}").contains("4242"), "{err:?}");
    }

    #[test]
    fn addresses() {
        let a = PostalAddress::parse(
            "billing",
            &[" Unter den Linden 1 ", "3. OG"],
            " Berlin ",
            "10117",
            "",
            "de",
        )
        .unwrap();
        assert_eq!(a.lines, ["Unter den Linden 1", "3. OG"]);
        assert_eq!(a.city, "Berlin");
        assert_eq!(a.postal_code, "10117");
        assert_eq!(a.region, "");
        assert_eq!(a.country.as_str(), "DE");

        let uk = PostalAddress::parse(
            "",
            &["10 Downing Street".to_owned()],
            "London",
            "sw1a 2aa",
            "",
            "GB",
        )
        .unwrap();
        assert_eq!(uk.postal_code, "SW1A 2AA");
        // Hong Kong has no postal codes.
        assert!(PostalAddress::parse("b", &["1 Queen's Rd"], "Hong Kong", "", "", "HK").is_ok());
    }

    #[test]
    fn address_errors_name_the_field() {
        let parse = |lines: &[&str], city: &str, postal: &str, region: &str, country: &str| {
            field_of(
                PostalAddress::parse("billing", lines, city, postal, region, country).unwrap_err(),
            )
        };
        let long = "x".repeat(101);
        assert_eq!(parse(&[], "C", "", "", "US"), "billing.address_lines");
        assert_eq!(
            parse(&["a", "b", "c", "d"], "C", "", "", "US"),
            "billing.address_lines"
        );
        assert_eq!(
            parse(&["a", "  "], "C", "", "", "US"),
            "billing.address_lines[1]"
        );
        assert_eq!(
            parse(&["a", &long], "C", "", "", "US"),
            "billing.address_lines[1]"
        );
        assert_eq!(
            parse(&["a\nb"], "C", "", "", "US"),
            "billing.address_lines[0]"
        );
        assert_eq!(parse(&["a"], " ", "", "", "US"), "billing.city");
        assert_eq!(parse(&["a"], &long, "", "", "US"), "billing.city");
        assert_eq!(parse(&["a"], "C", "1011#", "", "US"), "billing.postal_code");
        assert_eq!(
            parse(&["a"], "C", &"A".repeat(21), "", "US"),
            "billing.postal_code"
        );
        assert_eq!(parse(&["a"], "C", "", &long, "US"), "billing.region");
        assert_eq!(parse(&["a"], "C", "", "x\u{202e}y", "US"), "billing.region");
        assert_eq!(parse(&["a"], "C", "", "", "XX"), "billing.country");
        // 100 characters are fine, counted as characters rather than bytes.
        assert!(PostalAddress::parse("b", &["ü".repeat(100)], "C", "", "", "US").is_ok());
    }

    #[test]
    fn card_numbers_are_refused_in_every_free_text_address_field() {
        let with_card = |i: usize| {
            let mut parts = ["Main St 1", "Springfield", "12345", "IL", "US"];
            parts[i] = CARD;
            PostalAddress::parse(
                "billing",
                &[parts[0]],
                parts[1],
                parts[2],
                parts[3],
                parts[4],
            )
            .unwrap_err()
        };
        let fields = [
            "billing.address_lines[0]",
            "billing.city",
            "billing.postal_code", // the card number would pass the postal code rules
            "billing.region",
            // The country is a code, refused as such (see `countries`).
        ];
        for (i, field) in fields.into_iter().enumerate() {
            assert_card_refused(with_card(i), field);
        }
        let embedded = format!("Main St 1, card {CARD}");
        assert_card_refused(
            PostalAddress::parse("billing", &["ok", &embedded], "C", "", "", "US").unwrap_err(),
            "billing.address_lines[1]",
        );
    }

    #[test]
    fn legal_names() {
        assert_eq!(
            LegalName::parse("n", "  ACME GmbH & Co. KG ")
                .unwrap()
                .as_str(),
            "ACME GmbH & Co. KG"
        );
        assert!(LegalName::parse("n", &"ß".repeat(200)).is_ok());
        for bad in ["", "   ", "a\u{0}b", "evil\u{202e}gpj", "two\nlines"] {
            assert!(LegalName::parse("n", bad).is_err(), "{bad:?}");
        }
        assert!(LegalName::parse("n", &"x".repeat(201)).is_err());
        assert_card_refused(LegalName::parse("n", CARD).unwrap_err(), "n");
    }

    #[test]
    fn tax_ids() {
        let tax = |raw| {
            TaxId::parse_optional("t", raw)
                .unwrap()
                .map(|t| t.as_str().to_owned())
        };
        assert_eq!(tax("DE123456789").as_deref(), Some("DE123456789"));
        assert_eq!(tax(" gb 123 4567 89 ").as_deref(), Some("GB 123 4567 89"));
        assert_eq!(tax("che-123.456.789").as_deref(), Some("CHE-123.456.789"));
        // An id, not free text: Japan's 13-digit corporate numbers, say, would
        // pass the card rules about one time in thirty.
        assert_eq!(tax("T4222222222222").as_deref(), Some("T4222222222222"));
        assert_eq!(tax(""), None);
        assert_eq!(tax("  "), None);
        assert!(tax(&"1".repeat(11)).is_some());
        for bad in ["DE/123", "DE_123", "ID:1", "ü123"] {
            assert!(TaxId::parse_optional("t", bad).is_err(), "{bad:?}");
        }
        assert!(TaxId::parse_optional("t", &"A".repeat(33)).is_err());
    }
}
