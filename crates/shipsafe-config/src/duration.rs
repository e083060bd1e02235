//! Durations written as `"500ms"`, `"5s"`, `"15min"`, `"2h"`, `"1d"`.

use std::fmt;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub StdDuration);

impl Duration {
    pub const fn from_secs(s: u64) -> Self {
        Self(StdDuration::from_secs(s))
    }

    pub fn as_std(self) -> StdDuration {
        self.0
    }

    /// Milliseconds, for PostgreSQL's `lock_timeout` / `statement_timeout`.
    pub fn as_millis(self) -> u128 {
        self.0.as_millis()
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| {
                format!("duration {s:?} has no unit: write e.g. \"5s\", \"15min\", \"2h\"")
            })?;
        let (num, unit) = t.split_at(split);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("duration {s:?} does not start with a number"))?;
        let unit_secs = match unit.trim() {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            other => {
                return Err(format!(
                    "duration {s:?} has unknown unit {other:?}: use ms, s, min, h or d"
                ));
            }
        };
        let secs = value * unit_secs;
        if !secs.is_finite() || secs > 10.0 * 365.0 * 86_400.0 {
            return Err(format!("duration {s:?} is out of range"));
        }
        Ok(Self(StdDuration::from_secs_f64(secs)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(3_600_000) && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            write!(f, "{}min", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({self})")
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(Duration::parse("5s").unwrap().as_millis(), 5000);
        assert_eq!(Duration::parse("15min").unwrap().as_millis(), 900_000);
        assert_eq!(Duration::parse("500ms").unwrap().as_millis(), 500);
        assert_eq!(Duration::parse("1.5h").unwrap().as_millis(), 5_400_000);
        assert_eq!(Duration::parse("2 d").unwrap().as_millis(), 172_800_000);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "5", "s", "5 parsecs", "-1s", "1e999s"] {
            assert!(Duration::parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn displays_compactly() {
        assert_eq!(Duration::parse("30min").unwrap().to_string(), "30min");
        assert_eq!(Duration::parse("3s").unwrap().to_string(), "3s");
        assert_eq!(Duration::parse("250ms").unwrap().to_string(), "250ms");
    }
}
