//! The invoice as a document people read: one self-contained HTML page (inline
//! CSS, no scripts, no external resources) that can be mailed, archived or
//! printed to PDF and still looks the same years later. Every value is
//! HTML-escaped, since names and addresses are typed by customers.

use std::fmt::{self, Write};

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::domain::Money;

/// Who is invoiced, as validated in the billing profile (see
/// [`crate::domain::PostalAddress`]). Empty `postal_code` and `region` are left out.
pub struct BillTo<'a> {
    pub legal_name: &'a str,
    pub email: &'a str,
    pub tax_id: Option<&'a str>,
    pub address_lines: &'a [String],
    pub city: &'a str,
    pub postal_code: &'a str,
    pub region: &'a str,
    /// ISO 3166-1 alpha-2 code.
    pub country: &'a str,
}

/// One line item of an invoice.
pub struct DocLine<'a> {
    pub description: &'a str,
    pub amount: Money,
}

/// Where the invoice's payment stood when the document was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payment {
    /// Paid at this time.
    Paid(DateTime<Utc>),
    /// Open, due at this time.
    Due(DateTime<Utc>),
}

/// Everything printed on an invoice. The renderer does no arithmetic: the
/// caller computed the amounts, and the document shows exactly those.
pub struct InvoiceDocument<'a> {
    pub number: &'a str,
    pub issued: DateTime<Utc>,
    /// The billing period, `period_end` exclusive as periods are stored: a
    /// January period ends at February 1, 00:00 UTC and reads "2025-01-01 –
    /// 2025-01-31".
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// The display name of the organization the invoice is for.
    pub organization: &'a str,
    pub bill_to: BillTo<'a>,
    pub lines: Vec<DocLine<'a>>,
    pub subtotal: Money,
    /// Account credit applied, as a negative amount, so that `subtotal +
    /// credit == total`. A zero credit is left out of the document.
    pub credit: Money,
    pub total: Money,
    pub payment: Payment,
}

/// Renders the invoice as a complete UTF-8 HTML document.
pub fn render_html(doc: &InvoiceDocument) -> String {
    let mut html = String::with_capacity(4096);
    write_html(&mut html, doc).expect("writing to a String cannot fail");
    html
}

/// Inline so the document needs nothing but itself; `@media print` keeps a
/// printed or PDF copy on plain paper.
const STYLE: &str = "\
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#1a1a1a;margin:0;background:#f4f4f5}
main{max-width:760px;margin:2rem auto;padding:2.5rem;background:#fff}
h1{font-size:1.8rem;margin:0 0 1.5rem}
h2{font-size:.8rem;text-transform:uppercase;letter-spacing:.05em;color:#666;margin:0 0 .4rem}
table{width:100%;border-collapse:collapse}
.meta td{padding:.15rem 0}
.meta td:first-child{color:#666;width:9rem}
.bill-to{margin:2rem 0}
.bill-to p{margin:0 0 .5rem}
.lines th,.lines td{padding:.5rem 0;border-bottom:1px solid #e4e4e7;text-align:left}
.lines .amount{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.lines tfoot td{border-bottom:none}
.lines tfoot .total td{font-weight:bold;border-top:2px solid #1a1a1a}
.note{color:#666;font-size:.8rem;margin-top:2rem}
@media print{body{background:#fff}main{margin:0;padding:0;max-width:none}}
";

fn write_html(out: &mut String, doc: &InvoiceDocument) -> fmt::Result {
    let number = escape(doc.number);
    writeln!(out, "<!DOCTYPE html>")?;
    writeln!(out, "<html lang=\"en\">")?;
    writeln!(out, "<head>")?;
    writeln!(out, "<meta charset=\"utf-8\">")?;
    // Should the page be served rather than downloaded, it may load nothing.
    writeln!(
        out,
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
    )?;
    writeln!(
        out,
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    )?;
    writeln!(out, "<title>Invoice {number}</title>")?;
    writeln!(out, "<style>\n{STYLE}</style>")?;
    writeln!(out, "</head>")?;
    writeln!(out, "<body>")?;
    writeln!(out, "<main>")?;
    writeln!(out, "<h1>Invoice</h1>")?;

    writeln!(out, "<table class=\"meta\">")?;
    let period = format!(
        "{} – {}",
        doc.period_start.date_naive(),
        last_day(doc.period_start, doc.period_end)
    );
    let status = match doc.payment {
        Payment::Paid(at) => format!("Paid on {}", at.date_naive()),
        Payment::Due(at) => format!("Due {}", at.date_naive()),
    };
    for (label, value) in [
        ("Invoice number", doc.number.to_owned()),
        ("Issued", doc.issued.date_naive().to_string()),
        ("Status", status),
        ("Period", period),
        ("Organization", doc.organization.to_owned()),
    ] {
        writeln!(out, "<tr><td>{label}</td><td>{}</td></tr>", escape(&value))?;
    }
    writeln!(out, "</table>")?;

    let to = &doc.bill_to;
    writeln!(out, "<section class=\"bill-to\">")?;
    writeln!(out, "<h2>Bill to</h2>")?;
    let mut address = vec![escape(to.legal_name)];
    address.extend(to.address_lines.iter().map(|line| escape(line)));
    let mut locality = to.city.to_owned();
    if !to.region.is_empty() {
        write!(locality, ", {}", to.region)?;
    }
    if !to.postal_code.is_empty() {
        write!(locality, " {}", to.postal_code)?;
    }
    address.push(escape(&locality));
    address.push(escape(to.country));
    writeln!(out, "<p class=\"address\">{}</p>", address.join("<br>\n"))?;
    if let Some(tax_id) = to.tax_id.filter(|t| !t.is_empty()) {
        writeln!(out, "<p>Tax ID: {}</p>", escape(tax_id))?;
    }
    writeln!(out, "<p>{}</p>", escape(to.email))?;
    writeln!(out, "</section>")?;

    writeln!(out, "<table class=\"lines\">")?;
    writeln!(
        out,
        "<thead><tr><th>Description</th><th class=\"amount\">Amount</th></tr></thead>"
    )?;
    writeln!(out, "<tbody>")?;
    for line in &doc.lines {
        writeln!(
            out,
            "<tr><td>{}</td><td class=\"amount\">{}</td></tr>",
            escape(line.description),
            escape(&line.amount.format())
        )?;
    }
    writeln!(out, "</tbody>")?;
    writeln!(out, "<tfoot>")?;
    let mut totals = vec![("", "Subtotal", doc.subtotal)];
    if doc.credit.minor != 0 {
        totals.push(("", "Credit applied", doc.credit));
    }
    let total = match doc.payment {
        Payment::Paid(_) => "Total paid",
        Payment::Due(_) => "Total due",
    };
    totals.push((" class=\"total\"", total, doc.total));
    for (class, label, amount) in totals {
        writeln!(
            out,
            "<tr{class}><td>{label}</td><td class=\"amount\">{}</td></tr>",
            escape(&amount.format())
        )?;
    }
    writeln!(out, "</tfoot>")?;
    writeln!(out, "</table>")?;

    writeln!(out, "<p class=\"note\">Dates are in UTC.</p>")?;
    writeln!(out, "</main>")?;
    writeln!(out, "</body>")?;
    writeln!(out, "</html>")
}

/// The last day an exclusive `end` covers; the start day for an empty period.
fn last_day(start: DateTime<Utc>, end: DateTime<Utc>) -> NaiveDate {
    if end <= start {
        return start.date_naive();
    }
    (end - Duration::nanoseconds(1)).date_naive()
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::domain::Currency;

    fn usd(minor: i64) -> Money {
        Money::new(minor, Currency::parse("c", "USD").unwrap())
    }

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
    }

    fn render(name: &str, lines: &[String], description: &str, credit: i64) -> String {
        render_html(&document(name, lines, description, credit))
    }

    fn document<'a>(
        name: &'a str,
        lines: &'a [String],
        description: &'a str,
        credit: i64,
    ) -> InvoiceDocument<'a> {
        InvoiceDocument {
            number: "INV-2025-0042",
            issued: at(2025, 2, 1),
            period_start: at(2025, 1, 1),
            period_end: at(2025, 2, 1),
            organization: "Acme",
            bill_to: BillTo {
                legal_name: name,
                email: "billing@acme.example",
                tax_id: Some("DE123456789"),
                address_lines: lines,
                city: "Berlin",
                postal_code: "10117",
                region: "",
                country: "DE",
            },
            lines: vec![
                DocLine {
                    description,
                    amount: usd(12_000),
                },
                DocLine {
                    description: "Seat added 2025-01-16 (prorated)",
                    amount: usd(1_234),
                },
            ],
            subtotal: usd(13_234),
            credit: usd(credit),
            total: usd(13_234 + credit),
            payment: Payment::Due(at(2025, 2, 15)),
        }
    }

    #[test]
    fn says_when_it_is_due_or_was_paid() {
        let lines = ["Street 1".to_owned()];
        let open = render("A", &lines, "Plan", 0);
        assert!(
            open.contains("<td>Status</td><td>Due 2025-02-15</td>"),
            "{open}"
        );
        assert!(open.contains("<td>Total due</td>"), "{open}");
        let mut paid = document("A", &lines, "Plan", 0);
        paid.payment = Payment::Paid(Utc.with_ymd_and_hms(2025, 2, 9, 23, 59, 0).unwrap());
        let paid = render_html(&paid);
        assert!(
            paid.contains("<td>Status</td><td>Paid on 2025-02-09</td>"),
            "{paid}"
        );
        assert!(paid.contains("<td>Total paid</td>"), "{paid}");
        assert!(!paid.contains("Due "), "{paid}");
    }

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
        );
        assert_eq!(escape("O'Brien & Sons"), "O&#39;Brien &amp; Sons");
        assert_eq!(escape("Müller GmbH – 東京"), "Müller GmbH – 東京");
        assert_eq!(escape("&amp;"), "&amp;amp;");
    }

    #[test]
    fn shows_who_is_billed_and_the_totals() {
        let lines = ["Unter den Linden 1".to_owned(), "3. OG".to_owned()];
        let html = render("ACME GmbH", &lines, "Team plan, 10 seats", -500);
        for expected in [
            "<meta charset=\"utf-8\">",
            "<title>Invoice INV-2025-0042</title>",
            "ACME GmbH",
            "Unter den Linden 1<br>\n3. OG<br>\nBerlin 10117<br>\nDE",
            "Tax ID: DE123456789",
            "billing@acme.example",
            "2025-01-01 – 2025-01-31",
            "<td>Issued</td><td>2025-02-01</td>",
            "<td>Status</td><td>Due 2025-02-15</td>",
            "Team plan, 10 seats",
        ] {
            assert!(html.contains(expected), "{expected:?} missing in\n{html}");
        }
        for amount in [usd(12_000), usd(1_234), usd(13_234), usd(-500), usd(12_734)] {
            let shown = format!("<td class=\"amount\">{}</td>", amount.format());
            assert!(html.contains(&shown), "{shown:?} missing in\n{html}");
        }
        assert!(html.contains("USD 127.34"));
        assert!(html.contains("Credit applied"));
        assert!(!render("A", &lines, "x", 0).contains("Credit applied"));
    }

    #[test]
    fn hostile_text_is_escaped() {
        let evil = r#"<script>alert("pwned")</script>"#;
        let lines = ["<img src=x onerror='alert(1)'>".to_owned(), "ok".to_owned()];
        let html = render(evil, &lines, evil, 0);
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;"));
        assert!(html.contains("&lt;img src=x onerror=&#39;alert(1)&#39;&gt;"));
    }

    #[test]
    fn needs_nothing_from_outside() {
        let html = render("ACME GmbH", &["Street 1".to_owned()], "Plan", 0);
        for external in [
            "http:", "https:", "<link", "<script", "src=", "url(", "@import",
        ] {
            assert!(!html.contains(external), "{external:?} in\n{html}");
        }
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.trim_end().ends_with("</html>"));
    }

    #[test]
    fn periods_end_on_their_last_day() {
        assert_eq!(
            last_day(at(2025, 1, 1), at(2025, 2, 1)),
            NaiveDate::from_ymd_opt(2025, 1, 31).unwrap()
        );
        let noon = Utc.with_ymd_and_hms(2025, 1, 15, 12, 0, 0).unwrap();
        assert_eq!(
            last_day(at(2025, 1, 1), noon),
            NaiveDate::from_ymd_opt(2025, 1, 15).unwrap()
        );
        assert_eq!(
            last_day(at(2025, 1, 1), at(2025, 1, 1)),
            NaiveDate::from_ymd_opt(2025, 1, 1).unwrap()
        );
    }
}
