//! Words of messages that depend on a number, so that every count reads right:
//! "1 member", "3 members", "2 payment methods", "0 activities".

/// `n` followed by `noun` (singular) in the form that agrees with `n`.
pub fn count(n: impl Into<i64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {}", plural(noun))
    }
}

/// The plural of `noun` (its last word), by the regular English rules, which
/// every noun orgd counts follows.
pub fn plural(noun: &str) -> String {
    let before_y = noun.strip_suffix('y');
    match before_y.and_then(|stem| stem.chars().last()) {
        Some(c) if !"aeiou".contains(c) => format!("{}ies", &noun[..noun.len() - 1]),
        _ if ["s", "x", "ch", "sh"].iter().any(|end| noun.ends_with(end)) => format!("{noun}es"),
        _ => format!("{noun}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_their_numbers() {
        assert_eq!(count(1, "member"), "1 member");
        assert_eq!(count(0, "member"), "0 members");
        assert_eq!(count(3, "payment method"), "3 payment methods");
        assert_eq!(count(2, "activity"), "2 activities");
        assert_eq!(count(2, "day"), "2 days");
        assert_eq!(count(2, "address"), "2 addresses");
        assert_eq!(count(1_i32, "second"), "1 second");
    }
}
