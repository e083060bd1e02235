//! The `expect` of a `[[checks]]` entry: `= N`, `>= N`, `<= N`, `> N`, `< N`,
//! `true`, `empty`, `nonempty`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    Eq(i64),
    Ge(i64),
    Le(i64),
    Gt(i64),
    Lt(i64),
    /// First column of the first row is boolean true.
    True,
    /// The query returns no rows.
    Empty,
    /// The query returns at least one row.
    NonEmpty,
}

impl Expectation {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        match t {
            "true" => return Ok(Self::True),
            "empty" => return Ok(Self::Empty),
            "nonempty" => return Ok(Self::NonEmpty),
            _ => {}
        }
        let (op, rest) = [">=", "<=", "=", ">", "<"]
            .iter()
            .find_map(|op| t.strip_prefix(op).map(|r| (*op, r)))
            .ok_or_else(|| {
                format!(
                    "expect {s:?} is not understood: use `= N`, `>= N`, `<= N`, `> N`, `< N`, `true`, `empty` or `nonempty`"
                )
            })?;
        let rest = rest.trim();
        if rest.starts_with(['=', '<', '>']) {
            return Err(format!(
                "expect {s:?} is not understood: use `= N`, `>= N`, `<= N`, `> N`, `< N`, `true`, `empty` or `nonempty`"
            ));
        }
        let n: i64 = rest
            .parse()
            .map_err(|_| format!("expect {s:?}: {rest:?} is not a whole number"))?;
        Ok(match op {
            ">=" => Self::Ge(n),
            "<=" => Self::Le(n),
            "=" => Self::Eq(n),
            ">" => Self::Gt(n),
            _ => Self::Lt(n),
        })
    }

    /// Whether a numeric result satisfies a comparison expectation.
    pub fn holds_for_number(self, v: i64) -> Option<bool> {
        Some(match self {
            Self::Eq(n) => v == n,
            Self::Ge(n) => v >= n,
            Self::Le(n) => v <= n,
            Self::Gt(n) => v > n,
            Self::Lt(n) => v < n,
            Self::True | Self::Empty | Self::NonEmpty => return None,
        })
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Eq(n) => write!(f, "= {n}"),
            Self::Ge(n) => write!(f, ">= {n}"),
            Self::Le(n) => write!(f, "<= {n}"),
            Self::Gt(n) => write!(f, "> {n}"),
            Self::Lt(n) => write!(f, "< {n}"),
            Self::True => f.write_str("true"),
            Self::Empty => f.write_str("empty"),
            Self::NonEmpty => f.write_str("nonempty"),
        }
    }
}

impl fmt::Debug for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expectation({self})")
    }
}

impl<'de> Deserialize<'de> for Expectation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Expectation::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Expectation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(Expectation::parse(">= 1").unwrap(), Expectation::Ge(1));
        assert_eq!(Expectation::parse("=0").unwrap(), Expectation::Eq(0));
        assert_eq!(Expectation::parse("< -3").unwrap(), Expectation::Lt(-3));
        assert_eq!(Expectation::parse("empty").unwrap(), Expectation::Empty);
        assert_eq!(
            Expectation::parse("nonempty").unwrap(),
            Expectation::NonEmpty
        );
        assert_eq!(Expectation::parse("true").unwrap(), Expectation::True);
        assert!(Expectation::parse("== 1").is_err());
        assert!(Expectation::parse(">= one").is_err());
        assert!(Expectation::parse("maybe").is_err());
    }

    #[test]
    fn compares_numbers() {
        assert_eq!(Expectation::Ge(1).holds_for_number(1), Some(true));
        assert_eq!(Expectation::Gt(1).holds_for_number(1), Some(false));
        assert_eq!(Expectation::Empty.holds_for_number(0), None);
    }
}
