//! `[[readiness.waive]]`: an item accepted as it is, for a reason, until a
//! date. Waivers name known items only, always expire, and are audited.

use jiff::civil::Date;
use shipsafe_config::WaiverConfig;

use super::model::{Def, Item, Status, WaiverNote};
use shipsafe_protocol::CoreError;

/// Days before expiry from which a waiver is shown as expiring.
const EXPIRING_DAYS: i64 = 14;

/// A waiver for an unknown item is a configuration error: a typo would
/// otherwise silently waive nothing.
pub(super) fn validate(waivers: &[WaiverConfig], defs: &[Def]) -> Result<(), CoreError> {
    for w in waivers {
        if !defs.iter().any(|d| d.id == w.id) {
            let known: Vec<&str> = defs.iter().map(|d| d.id).collect();
            return Err(CoreError::Setup(format!(
                "[[readiness.waive]] names {:?}, which is not a readiness item; the items are: {}",
                w.id,
                known.join(", ")
            )));
        }
        if w.reason.trim().is_empty() {
            return Err(CoreError::Setup(format!(
                "[[readiness.waive]] for {:?} has an empty reason: say why the item is accepted",
                w.id
            )));
        }
    }
    Ok(())
}

/// Marks waived items and returns one line per waiver expiring within 14
/// days or already expired.
pub(super) fn apply(items: &mut [Item], waivers: &[WaiverConfig], today: Date) -> Vec<String> {
    let mut expiring = Vec::new();
    for w in waivers {
        let days_left = (w.until - today).get_days() as i64 + 1;
        if days_left <= 0 {
            expiring.push(format!("{}: waiver expired on {}", w.id, w.until));
        } else if days_left <= EXPIRING_DAYS {
            expiring.push(format!(
                "{}: waiver expires on {} ({days_left} days left)",
                w.id, w.until
            ));
        }
        let Some(item) = items.iter_mut().find(|i| i.id == w.id) else {
            continue;
        };
        let before = item.status;
        let state = if before == Status::Pass {
            "not_needed"
        } else if days_left <= 0 {
            "expired"
        } else {
            item.status = Status::Waived;
            "applied"
        };
        item.waiver = Some(WaiverNote {
            reason: w.reason.clone(),
            until: w.until.to_string(),
            days_left,
            state,
            status_without: before,
        });
    }
    expiring
}

#[cfg(test)]
mod tests {
    use super::super::model::{Category, Evidence, Level};
    use super::*;

    const D: Def = Def {
        id: "x",
        category: Category::Security,
        level: Level::Bronze,
        title: "x",
    };

    fn waiver(until: &str) -> WaiverConfig {
        WaiverConfig {
            id: "x".into(),
            reason: "vendor fix due".into(),
            until: until.parse().unwrap(),
        }
    }

    #[test]
    fn a_waiver_holds_until_its_last_day_then_the_item_fails_again() {
        let today: Date = "2027-01-10".parse().unwrap();
        let mut items = vec![D.fail(Evidence::new("config", "bad"), "fix")];
        let notes = apply(&mut items, &[waiver("2027-01-10")], today);
        assert_eq!(items[0].status, Status::Waived);
        assert_eq!(items[0].waiver.as_ref().unwrap().days_left, 1);
        assert_eq!(notes.len(), 1, "expiring today is shown");

        let mut items = vec![D.fail(Evidence::new("config", "bad"), "fix")];
        let notes = apply(&mut items, &[waiver("2027-01-09")], today);
        assert_eq!(items[0].status, Status::Fail);
        assert_eq!(items[0].waiver.as_ref().unwrap().state, "expired");
        assert!(notes[0].contains("expired"), "{notes:?}");

        let mut items = vec![D.pass(Evidence::new("config", "good"))];
        let notes = apply(&mut items, &[waiver("2027-06-01")], today);
        assert_eq!(items[0].status, Status::Pass);
        assert_eq!(items[0].waiver.as_ref().unwrap().state, "not_needed");
        assert!(notes.is_empty());
    }

    #[test]
    fn unknown_ids_and_empty_reasons_are_refused() {
        let defs = [D];
        let mut w = waiver("2027-01-01");
        w.id = "no-such-item".into();
        assert!(
            validate(&[w], &defs)
                .unwrap_err()
                .to_string()
                .contains("not a readiness item")
        );
        let mut w = waiver("2027-01-01");
        w.reason = " ".into();
        assert!(validate(&[w], &defs).is_err());
    }
}
