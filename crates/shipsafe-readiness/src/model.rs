//! The scorecard's shapes: items, their evidence, levels and scores.

use serde::Serialize;
use shipsafe_config::ReadinessLevel;

/// The groups of seed 002's checklist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    DataProtection,
    DeploymentSafety,
    Security,
    DatabaseHealth,
    Operations,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Self::DataProtection,
        Self::DeploymentSafety,
        Self::Security,
        Self::DatabaseHealth,
        Self::Operations,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DataProtection => "data-protection",
            Self::DeploymentSafety => "deployment-safety",
            Self::Security => "security",
            Self::DatabaseHealth => "database-health",
            Self::Operations => "operations",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::DataProtection => "Data protection",
            Self::DeploymentSafety => "Deployment safety",
            Self::Security => "Security",
            Self::DatabaseHealth => "Database health",
            Self::Operations => "Monitoring and operations",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// Reported, does not hold a level back.
    Warn,
    Fail,
    /// Could not be measured (no privilege, nothing configured to measure):
    /// holds its level back, as a failure does.
    Unknown,
    /// Failing, warned or unknown, and accepted by a waiver in the config.
    Waived,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
            Self::Unknown => "unknown",
            Self::Waived => "waived",
        }
    }

    /// Does not hold a level back.
    pub fn holds(self) -> bool {
        matches!(self, Self::Pass | Self::Warn | Self::Waived)
    }
}

/// The level a scorecard (or category) reached: every item of that level
/// and the ones below passes (or warns, or is waived).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    NotReady,
    Bronze,
    Silver,
    Gold,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotReady => "not-ready",
            Self::Bronze => "bronze",
            Self::Silver => "silver",
            Self::Gold => "gold",
        }
    }

    pub fn of(l: ReadinessLevel) -> Self {
        match l {
            ReadinessLevel::Bronze => Self::Bronze,
            ReadinessLevel::Silver => Self::Silver,
            ReadinessLevel::Gold => Self::Gold,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::NotReady, Self::Bronze, Self::Silver, Self::Gold]
            .into_iter()
            .find(|l| l.as_str() == s)
    }
}

/// What an item is: fixed for its id.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub id: &'static str,
    pub category: Category,
    /// The lowest level that requires this item.
    pub level: Level,
    pub title: &'static str,
}

impl Def {
    /// Weight in the score: items of lower levels matter more.
    pub fn weight(&self) -> u32 {
        match self.level {
            Level::Bronze | Level::NotReady => 3,
            Level::Silver => 2,
            Level::Gold => 1,
        }
    }

    fn item(&self, status: Status, evidence: Evidence, fix: Option<String>) -> Item {
        Item {
            id: self.id,
            category: self.category,
            title: self.title,
            level: self.level,
            weight: self.weight(),
            status,
            evidence,
            measured_at: shipsafe_state::now_rfc3339(),
            fix,
            waiver: None,
        }
    }

    pub fn pass(&self, evidence: Evidence) -> Item {
        self.item(Status::Pass, evidence, None)
    }

    pub fn fail(&self, evidence: Evidence, fix: impl Into<String>) -> Item {
        self.item(Status::Fail, evidence, Some(fix.into()))
    }

    pub fn warn(&self, evidence: Evidence, fix: impl Into<String>) -> Item {
        self.item(Status::Warn, evidence, Some(fix.into()))
    }

    /// Not measurable: `why` says what was missing.
    pub fn unknown(&self, source: &str, why: impl Into<String>, fix: Option<String>) -> Item {
        self.item(Status::Unknown, Evidence::new(source, why), fix)
    }

    /// `pass` when `ok`, else `fail` with `fix`.
    pub fn judge(&self, ok: bool, evidence: Evidence, fix: impl Into<String>) -> Item {
        if ok {
            self.pass(evidence)
        } else {
            self.fail(evidence, fix)
        }
    }
}

/// What an item's status rests on.
#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    /// One line a person reads: the measured value and what it names.
    pub summary: String,
    /// `database`, `backup catalog`, `run history`, `audit log`, `config`,
    /// `repository`, `http`.
    pub source: String,
    /// The measured values (tables, indexes, backup ids, times).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub value: serde_json::Value,
    /// The SQL that measured it, when it came from the database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

impl Evidence {
    pub fn new(source: &str, summary: impl Into<String>) -> Self {
        Self {
            summary: summary.into(),
            source: source.to_string(),
            value: serde_json::Value::Null,
            query: None,
        }
    }

    /// From the database, measured by `sql`.
    pub fn sql(sql: &str, summary: impl Into<String>) -> Self {
        Self {
            query: Some(squeeze(sql)),
            ..Self::new("database", summary)
        }
    }

    pub fn value(mut self, v: impl Serialize) -> Self {
        self.value = serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
        self
    }
}

/// SQL on one line, runs of spaces made one.
fn squeeze(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub id: &'static str,
    pub category: Category,
    pub title: &'static str,
    /// The lowest level that requires it.
    pub level: Level,
    pub weight: u32,
    pub status: Status,
    pub evidence: Evidence,
    pub measured_at: String,
    /// What to run or change to make it pass.
    pub fix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiver: Option<WaiverNote>,
}

/// A configured waiver as it applied to an item.
#[derive(Debug, Clone, Serialize)]
pub struct WaiverNote {
    pub reason: String,
    pub until: String,
    /// Days left, today included; negative once expired.
    pub days_left: i64,
    /// `applied`, `expired` (the item keeps its status) or `not_needed`
    /// (the item passes).
    pub state: &'static str,
    /// The status the item would have without the waiver.
    pub status_without: Status,
}

#[derive(Debug, Clone, Serialize)]
pub struct CategoryScore {
    pub category: Category,
    pub title: &'static str,
    /// 0–100: weighted share of passing items (a warning counts half;
    /// waived items are left out).
    pub score: u32,
    pub level: Level,
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    pub unknown: usize,
    pub waived: usize,
}

impl CategoryScore {
    /// Title, level, score and the count of each status, in table order.
    pub fn cells(&self) -> Vec<String> {
        let mut cells = vec![
            self.title.to_string(),
            self.level.as_str().to_string(),
            self.score.to_string(),
        ];
        cells.extend(
            [self.pass, self.warn, self.fail, self.unknown, self.waived]
                .iter()
                .map(usize::to_string),
        );
        cells
    }
}

/// The highest level whose items, and those of every level below, all hold.
pub fn level_of<'a>(items: impl Iterator<Item = &'a Item> + Clone) -> Level {
    let mut reached = Level::NotReady;
    for level in [Level::Bronze, Level::Silver, Level::Gold] {
        if items
            .clone()
            .filter(|i| i.level <= level)
            .all(|i| i.status.holds())
        {
            reached = level;
        } else {
            break;
        }
    }
    reached
}

/// Weighted score 0–100; 100 when nothing counts.
pub fn score_of<'a>(items: impl Iterator<Item = &'a Item>) -> u32 {
    let (mut got, mut total) = (0.0, 0.0);
    for i in items.filter(|i| i.status != Status::Waived) {
        let w = f64::from(i.weight);
        total += w;
        got += w * match i.status {
            Status::Pass => 1.0,
            Status::Warn => 0.5,
            _ => 0.0,
        };
    }
    if total == 0.0 {
        100
    } else {
        (got / total * 100.0).round() as u32
    }
}

pub fn category_scores(items: &[Item]) -> Vec<CategoryScore> {
    Category::ALL
        .iter()
        .map(|&c| {
            let mine = items.iter().filter(move |i| i.category == c);
            let count = |s: Status| mine.clone().filter(|i| i.status == s).count();
            CategoryScore {
                category: c,
                title: c.title(),
                score: score_of(mine.clone()),
                level: level_of(mine.clone()),
                pass: count(Status::Pass),
                warn: count(Status::Warn),
                fail: count(Status::Fail),
                unknown: count(Status::Unknown),
                waived: count(Status::Waived),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Def = Def {
        id: "b",
        category: Category::Security,
        level: Level::Bronze,
        title: "b",
    };
    const S: Def = Def {
        id: "s",
        category: Category::Security,
        level: Level::Silver,
        title: "s",
    };
    const G: Def = Def {
        id: "g",
        category: Category::DatabaseHealth,
        level: Level::Gold,
        title: "g",
    };

    fn ev() -> Evidence {
        Evidence::new("config", "x")
    }

    #[test]
    fn a_level_needs_every_item_of_it_and_below() {
        let items = [B.pass(ev()), S.fail(ev(), "fix"), G.pass(ev())];
        assert_eq!(level_of(items.iter()), Level::Bronze);
        // A gold item passing does not lift a failed silver one.
        let items = [B.unknown("database", "no privilege", None), G.pass(ev())];
        assert_eq!(level_of(items.iter()), Level::NotReady);
        let items = [B.warn(ev(), "fix"), S.pass(ev()), G.pass(ev())];
        assert_eq!(level_of(items.iter()), Level::Gold);
    }

    #[test]
    fn scores_weigh_lower_levels_more_and_leave_waived_items_out() {
        // bronze 3 pass + silver 2 fail = 3/5.
        let items = [B.pass(ev()), S.fail(ev(), "fix")];
        assert_eq!(score_of(items.iter()), 60);
        let mut waived = S.fail(ev(), "fix");
        waived.status = Status::Waived;
        let items = [B.pass(ev()), waived];
        assert_eq!(score_of(items.iter()), 100);
        let items = [B.warn(ev(), "fix")];
        assert_eq!(score_of(items.iter()), 50);
    }
}
