//! Maintenance windows: `"Sat 22:00-02:00 Europe/Berlin"`.
//!
//! Days are `Mon`..`Sun`, a list (`Sat,Sun`), a range (`Mon-Fri`) or `daily`.
//! The end may be earlier than the start: the window then runs past midnight
//! and belongs to the day it starts on (Sat 22:00 to Sun 02:00 above).

use std::fmt;

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use serde::{Deserialize, Deserializer};

#[derive(Clone)]
pub struct Window {
    raw: String,
    days: [bool; 7],
    start: Time,
    end: Time,
    tz_name: String,
    tz: TimeZone,
}

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

fn day_index(s: &str) -> Option<usize> {
    let key = s.get(..3)?.to_ascii_lowercase();
    DAYS.iter().position(|(n, _)| *n == key)
}

fn parse_time(s: &str) -> Option<Time> {
    let (h, m) = s.split_once(':')?;
    let h: i8 = h.parse().ok()?;
    let m: i8 = m.parse().ok()?;
    if h == 24 && m == 0 {
        return Some(Time::MAX);
    }
    Time::new(h, m, 0, 0).ok()
}

impl Window {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let usage = "write it as `DAYS HH:MM-HH:MM TIMEZONE`, e.g. \"Sat 22:00-02:00 Europe/Berlin\" (DAYS: Mon..Sun, Sat,Sun, Mon-Fri or daily)";
        let fields: Vec<&str> = raw.split_whitespace().collect();
        let [days_s, times_s, tz_s] = fields[..] else {
            return Err(format!("window {raw:?} is not understood: {usage}"));
        };
        let mut days = [false; 7];
        if days_s.eq_ignore_ascii_case("daily") {
            days = [true; 7];
        } else {
            for item in days_s.split(',') {
                if let Some((a, b)) = item.split_once('-') {
                    let (Some(a), Some(b)) = (day_index(a), day_index(b)) else {
                        return Err(format!("window {raw:?}: unknown day in {item:?}; {usage}"));
                    };
                    let mut i = a;
                    loop {
                        days[i] = true;
                        if i == b {
                            break;
                        }
                        i = (i + 1) % 7;
                    }
                } else {
                    let Some(i) = day_index(item).filter(|_| item.len() <= 9) else {
                        return Err(format!("window {raw:?}: unknown day {item:?}; {usage}"));
                    };
                    days[i] = true;
                }
            }
        }
        let (start_s, end_s) = times_s
            .split_once('-')
            .ok_or_else(|| format!("window {raw:?}: times must be `HH:MM-HH:MM`"))?;
        let start = parse_time(start_s)
            .ok_or_else(|| format!("window {raw:?}: {start_s:?} is not a time HH:MM"))?;
        let end = parse_time(end_s)
            .ok_or_else(|| format!("window {raw:?}: {end_s:?} is not a time HH:MM"))?;
        if start == end {
            return Err(format!("window {raw:?}: start and end are the same time"));
        }
        let tz = TimeZone::get(tz_s).map_err(|_| {
            format!("window {raw:?}: {tz_s:?} is not a known time zone (use an IANA name such as Europe/Berlin or UTC)")
        })?;
        Ok(Self {
            raw: raw.to_string(),
            days,
            start,
            end,
            tz_name: tz_s.to_string(),
            tz,
        })
    }

    pub fn time_zone_name(&self) -> &str {
        &self.tz_name
    }

    /// Whether `at` falls inside the window (in the window's time zone).
    pub fn contains(&self, at: Timestamp) -> bool {
        let local: Zoned = at.to_zoned(self.tz.clone());
        let t = local.time();
        let today = day_pos(local.weekday());
        if self.start < self.end {
            self.days[today] && t >= self.start && t < self.end
        } else {
            // Overnight: the evening part belongs to today, the morning part
            // to the window that started yesterday.
            let yesterday = (today + 6) % 7;
            (self.days[today] && t >= self.start) || (self.days[yesterday] && t < self.end)
        }
    }
}

fn day_pos(w: Weekday) -> usize {
    DAYS.iter().position(|(_, d)| *d == w).unwrap_or(0)
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Window({:?})", self.raw)
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Window::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse::<Zoned>().unwrap().timestamp()
    }

    #[test]
    fn overnight_window_in_its_zone() {
        let w = Window::parse("Sat 22:00-02:00 Europe/Berlin").unwrap();
        // 2026-11-21 is a Saturday.
        assert!(w.contains(ts("2026-11-21T22:30[Europe/Berlin]")));
        assert!(w.contains(ts("2026-11-22T01:59[Europe/Berlin]")));
        assert!(!w.contains(ts("2026-11-22T02:00[Europe/Berlin]")));
        assert!(!w.contains(ts("2026-11-21T21:59[Europe/Berlin]")));
        assert!(!w.contains(ts("2026-11-20T23:00[Europe/Berlin]")));
        // 21:30 UTC on that Saturday is 22:30 in Berlin.
        assert!(w.contains(ts("2026-11-21T21:30[UTC]")));
    }

    #[test]
    fn ranges_lists_and_daily() {
        let w = Window::parse("Mon-Fri 09:00-17:00 UTC").unwrap();
        assert!(w.contains(ts("2026-11-20T10:00[UTC]"))); // Friday
        assert!(!w.contains(ts("2026-11-21T10:00[UTC]"))); // Saturday
        let w = Window::parse("Sat,Sun 00:00-24:00 UTC").unwrap();
        assert!(w.contains(ts("2026-11-22T23:59[UTC]")));
        assert!(Window::parse("daily 01:00-03:00 UTC").is_ok());
    }

    #[test]
    fn rejects_bad_windows() {
        for bad in [
            "Sat 22:00-02:00",
            "Caturday 22:00-02:00 UTC",
            "Sat 25:00-02:00 UTC",
            "Sat 22:00-22:00 UTC",
            "Sat 22:00-02:00 Mars/Olympus",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }
}
