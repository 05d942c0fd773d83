//! Dataset sizes by their number of organizations: `--scale 400k` is 400,000
//! organizations, a quarter of them teams and three quarters the personal
//! organizations of as many users (the proportions of the default dataset,
//! 10,000 teams and 30,000 users), so that every scale has the same shape and
//! only the amount of data changes.

use std::fmt;
use std::str::FromStr;

use crate::dataset::Shape;

/// A dataset size, with the name it was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scale {
    /// As given (`4k`, `400k`), for the report and the database's name.
    pub label: String,
    pub shape: Shape,
}

impl Scale {
    /// The dataset `--orgs` and `--users` describe.
    pub fn of(shape: Shape) -> Self {
        Scale {
            label: abbreviated(shape.orgs + shape.users),
            shape,
        }
    }

    /// The database this scale is seeded into when several share the cluster.
    pub fn database(&self) -> String {
        format!("orgd_{}", self.label.to_ascii_lowercase())
    }
}

impl FromStr for Scale {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        let (digits, multiplier) = match lower.as_bytes().last() {
            Some(b'k') => (&lower[..lower.len() - 1], 1_000),
            Some(b'm') => (&lower[..lower.len() - 1], 1_000_000),
            _ => (lower.as_str(), 1),
        };
        let organizations = digits
            .parse::<u32>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier))
            .ok_or_else(|| {
                format!("'{text}' is not a number of organizations such as 4k, 400k or 1m")
            })?;
        if organizations < 40 || organizations % 4 != 0 {
            return Err(format!(
                "'{text}': a scale is a multiple of 4 organizations, at least 40 (a quarter of them teams, a tenth of those large)"
            ));
        }
        let teams = organizations / 4;
        Ok(Scale {
            label: lower,
            shape: Shape {
                orgs: teams,
                users: organizations - teams,
            },
        })
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

/// 4000 as `4k`, 1500 as `1500`.
fn abbreviated(n: u32) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}m", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}
