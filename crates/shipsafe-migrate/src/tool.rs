//! The migration tools shipsafe knows (presets): their commands, where a
//! database stands according to the tool's own history table, the pending
//! revisions parsed from the tool's listing, and the commands that take a
//! database back to exactly the state recorded before a deploy.
//!
//! The state is read from the history table rather than from the tool's
//! `current` output: the table is what the tool itself trusts, and reading
//! it needs neither the app's code nor its settings to import cleanly.

use serde::{Deserialize, Serialize};
use shipsafe_config::MigrationTool;

/// Where a database stands for its migration tool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolState {
    /// alembic / Flask-Migrate: the rows of `alembic_version` (one per
    /// head). Django: `app.migration`, the latest applied per app, oldest
    /// app first. Rails: the highest applied version. Prisma: finished
    /// migration names. Command: the `current` command's output.
    pub revisions: Vec<String>,
}

impl ToolState {
    /// `base` (alembic), `zero` (Django), `0` (Rails) when nothing is applied.
    pub fn render(&self, tool: MigrationTool) -> String {
        if self.revisions.is_empty() {
            return match tool {
                MigrationTool::Alembic | MigrationTool::FlaskMigrate => "base".into(),
                MigrationTool::Django => "zero".into(),
                MigrationTool::Rails => "0".into(),
                _ => String::new(),
            };
        }
        self.revisions.join(" ")
    }
}

/// A revision the tool would apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingRevision {
    pub id: String,
    pub name: String,
}

/// The command that applies everything pending.
pub fn up_command(tool: MigrationTool) -> Option<&'static str> {
    Some(match tool {
        MigrationTool::Alembic => "alembic upgrade heads",
        MigrationTool::FlaskMigrate => "flask db upgrade",
        MigrationTool::Django => "python manage.py migrate --noinput",
        MigrationTool::Rails => "bin/rails db:migrate",
        MigrationTool::Prisma | MigrationTool::Command => return None,
    })
}

/// The command that lists revisions, parsed by [`parse_pending`].
pub fn list_command(tool: MigrationTool) -> Option<&'static str> {
    Some(match tool {
        MigrationTool::Alembic => "alembic history",
        MigrationTool::FlaskMigrate => "flask db history",
        MigrationTool::Django => "python manage.py showmigrations --plan",
        MigrationTool::Rails => "bin/rails db:migrate:status",
        MigrationTool::Prisma | MigrationTool::Command => return None,
    })
}

/// The query that reads the tool's history table; `None` when the table
/// does not exist yet (nothing applied).
fn state_query(tool: MigrationTool) -> Option<(&'static str, &'static str)> {
    Some(match tool {
        MigrationTool::Alembic | MigrationTool::FlaskMigrate => (
            "alembic_version",
            "select version_num::text from alembic_version order by 1",
        ),
        MigrationTool::Django => (
            "django_migrations",
            "select app || '.' || name from (select distinct on (app) app, name, id from django_migrations order by app, id desc) last order by id",
        ),
        MigrationTool::Rails => (
            "schema_migrations",
            "select max(version)::text from schema_migrations having count(*) > 0",
        ),
        MigrationTool::Prisma => (
            "_prisma_migrations",
            "select migration_name from _prisma_migrations where finished_at is not null and rolled_back_at is null order by finished_at, migration_name",
        ),
        MigrationTool::Command => return None,
    })
}

/// Reads where `client`'s database stands from the tool's history table.
pub async fn read_state(
    client: &tokio_postgres::Client,
    tool: MigrationTool,
) -> Result<ToolState, tokio_postgres::Error> {
    let Some((table, query)) = state_query(tool) else {
        return Ok(ToolState::default());
    };
    let exists: bool = client
        .query_one("select to_regclass($1) is not null", &[&table])
        .await?
        .get(0);
    if !exists {
        return Ok(ToolState::default());
    }
    let revisions = client
        .query(query, &[])
        .await?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    Ok(ToolState { revisions })
}

/// Quotes `s` for `sh -c`: revisions come from a database table, so they
/// are data, never shell syntax.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/=+@".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Refuses a revision that is not one the tool could have written: the
/// history table is writable by the app's role, and a revision becomes an
/// argument of the way back. A leading `-` would be read as an option.
pub fn check_revision(tool: MigrationTool, rev: &str) -> Result<(), String> {
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let ok = !rev.starts_with('-')
        && match tool {
            MigrationTool::Alembic | MigrationTool::FlaskMigrate => word(rev),
            MigrationTool::Django => rev.split_once('.').is_some_and(|(a, m)| word(a) && word(m)),
            MigrationTool::Rails => !rev.is_empty() && rev.bytes().all(|b| b.is_ascii_digit()),
            MigrationTool::Prisma | MigrationTool::Command => {
                !rev.is_empty() && !rev.chars().any(char::is_control)
            }
        };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the recorded revision {rev:?} is not a revision {} writes; refusing to pass it to the tool (restore the pre-deploy backup, or go back by hand)",
            tool.as_str()
        ))
    }
}

/// The commands that take a database from `now` back to `before`, in
/// order. An error says why the preset cannot do it exactly (the caller
/// then restores the pre-deploy backup where there is one).
pub fn down_commands(
    tool: MigrationTool,
    before: &ToolState,
    now: &ToolState,
) -> Result<Vec<String>, String> {
    if before == now {
        return Ok(Vec::new());
    }
    for rev in before.revisions.iter().chain(&now.revisions) {
        check_revision(tool, rev)?;
    }
    match tool {
        MigrationTool::Alembic | MigrationTool::FlaskMigrate => {
            let target = match before.revisions.as_slice() {
                [] => "base".to_string(),
                [one] => sh_quote(one),
                many => {
                    return Err(format!(
                        "the database had {} alembic heads before the deploy ({}); one downgrade cannot return to several heads",
                        many.len(),
                        many.join(", ")
                    ));
                }
            };
            Ok(vec![if tool == MigrationTool::Alembic {
                format!("alembic downgrade {target}")
            } else {
                format!("flask db downgrade {target}")
            }])
        }
        MigrationTool::Django => {
            let app = |r: &str| r.split_once('.').map(|(a, _)| a.to_string());
            let mut out = Vec::new();
            // Newest app first: a later app's migrations may depend on an
            // earlier one's, so they are unapplied first.
            for rev in now.revisions.iter().rev() {
                let Some(a) = app(rev) else { continue };
                let was = before
                    .revisions
                    .iter()
                    .find(|b| app(b).as_deref() == Some(a.as_str()));
                if was.map(String::as_str) == Some(rev.as_str()) {
                    continue;
                }
                let target = was
                    .and_then(|w| w.split_once('.').map(|(_, n)| n.to_string()))
                    .unwrap_or_else(|| "zero".into());
                out.push(format!(
                    "python manage.py migrate {} {} --noinput",
                    sh_quote(&a),
                    sh_quote(&target)
                ));
            }
            Ok(out)
        }
        MigrationTool::Rails => {
            let v = before.revisions.first().map_or("0", String::as_str);
            Ok(vec![format!("bin/rails db:migrate VERSION={}", sh_quote(v))])
        }
        MigrationTool::Prisma => {
            Err("Prisma migrations have no down: a failed deploy is undone by restoring the pre-deploy backup".into())
        }
        MigrationTool::Command => {
            Err("no preset: the [migrations] down command decides how far it goes".into())
        }
    }
}

/// Commands that print the SQL the tool would run for `pending`, for lint.
/// `Err` says why there is none.
pub fn sql_commands(
    tool: MigrationTool,
    state: &ToolState,
    pending: &[PendingRevision],
) -> Result<Vec<String>, String> {
    match tool {
        MigrationTool::Alembic | MigrationTool::FlaskMigrate => {
            let range = match state.revisions.as_slice() {
                [] => "head".to_string(),
                [one] => format!("{}:head", sh_quote(one)),
                _ => return Err("several alembic heads: offline SQL needs one starting point".into()),
            };
            Ok(vec![if tool == MigrationTool::Alembic {
                format!("alembic upgrade {range} --sql")
            } else {
                format!("flask db upgrade --sql {range}")
            }])
        }
        MigrationTool::Django => Ok(pending
            .iter()
            .filter_map(|p| p.id.split_once('.'))
            .map(|(app, name)| {
                format!(
                    "python manage.py sqlmigrate {} {}",
                    sh_quote(app),
                    sh_quote(name)
                )
            })
            .collect()),
        MigrationTool::Rails => Err(
            "Rails prints no SQL for pending migrations without running them; they are measured by the rehearsal".into(),
        ),
        MigrationTool::Prisma => Ok(Vec::new()),
        MigrationTool::Command => {
            Err("no preset: the tool's SQL is not visible to shipsafe".into())
        }
    }
}

/// The command that prints, offline, the SQL of going back from the newest
/// revision to `state` (where the database stands), one revision after the
/// other: alembic marks each with `-- Running downgrade X -> Y`, read by
/// [`empty_downgrades`]. `Err` says why there is none.
pub fn down_sql_command(tool: MigrationTool, state: &ToolState) -> Result<String, String> {
    match tool {
        MigrationTool::Alembic | MigrationTool::FlaskMigrate => {
            let to = match state.revisions.as_slice() {
                [] => "base".to_string(),
                [one] => {
                    check_revision(tool, one)?;
                    one.clone()
                }
                _ => {
                    return Err("several alembic heads: offline SQL needs one end point".into());
                }
            };
            Ok(if tool == MigrationTool::Alembic {
                format!("alembic downgrade head:{} --sql", sh_quote(&to))
            } else {
                format!("flask db downgrade --sql head:{}", sh_quote(&to))
            })
        }
        _ => Err(format!(
            "{} prints no offline SQL for going back",
            tool.as_str()
        )),
    }
}

/// Each revision of the offline downgrade SQL (the output of
/// [`down_sql_command`]), in the order alembic would run them, and whether
/// its part holds no statement but the tool's own bookkeeping: then its
/// `downgrade()` does nothing (`pass`), and going back with the tool moves
/// the history table while the revision's change stays.
pub fn empty_downgrades(tool: MigrationTool, sql: &str) -> Vec<(String, bool)> {
    if !matches!(tool, MigrationTool::Alembic | MigrationTool::FlaskMigrate) {
        return Vec::new();
    }
    // (revision, whether it is a merge point, its SQL)
    let mut parts: Vec<(String, bool, String)> = Vec::new();
    for line in sql.lines() {
        if let Some(rest) = line.trim_start().strip_prefix("-- Running downgrade ") {
            let (rev, to) = rest.split_once(" -> ").unwrap_or((rest, ""));
            // `0005 -> 0003, 0004`: going back splits the heads again.
            let merge = to.contains(',');
            parts.push((rev.trim().to_string(), merge, String::new()));
        } else if let Some((_, _, text)) = parts.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    parts
        .into_iter()
        .filter(|(rev, _, _)| !rev.is_empty())
        .map(|(rev, merge, text)| {
            // A merge point only joins branches (`flask db merge` writes
            // `pass` both ways): nothing to undo.
            let empty = !merge && !has_statement(&tidy_sql(tool, &text));
            (rev, empty)
        })
        .collect()
}

/// Whether `sql` holds a statement other than `BEGIN` / `COMMIT`: comments
/// and blank lines are not statements.
fn has_statement(sql: &str) -> bool {
    sql.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("--"))
        .flat_map(|l| l.split(';'))
        .map(|s| s.trim().to_ascii_uppercase())
        .any(|s| {
            !s.is_empty()
                && !matches!(
                    s.as_str(),
                    "BEGIN" | "COMMIT" | "BEGIN TRANSACTION" | "START TRANSACTION" | "END"
                )
        })
}

/// Keeps the SQL of alembic's offline output that a linter should see: its
/// own bookkeeping (`alembic_version`) is left out.
pub fn tidy_sql(tool: MigrationTool, sql: &str) -> String {
    match tool {
        MigrationTool::Alembic | MigrationTool::FlaskMigrate => {
            let mut out = String::new();
            let mut skip = false;
            for line in sql.lines() {
                let t = line.trim_start();
                // INFO lines from alembic's logger go to stderr, but apps
                // may print to stdout too: keep only what parses as SQL.
                if t.starts_with("INFO ") || t.starts_with("WARNING ") {
                    continue;
                }
                let lower = t.to_ascii_lowercase();
                if lower.contains("alembic_version") {
                    skip = !t.trim_end().ends_with(';');
                    continue;
                }
                if skip {
                    skip = !t.trim_end().ends_with(';');
                    continue;
                }
                out.push_str(line);
                out.push('\n');
            }
            out
        }
        MigrationTool::Django => sql
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => sql.to_string(),
    }
}

/// The revisions the tool's listing (see [`list_command`]) says are not
/// applied, oldest first. alembic's history is combined with the heads
/// read from the database, so a revision is pending exactly when it is not
/// an ancestor of (or equal to) a current head.
pub fn parse_pending(
    tool: MigrationTool,
    listing: &str,
    state: &ToolState,
) -> Result<Vec<PendingRevision>, String> {
    match tool {
        MigrationTool::Alembic | MigrationTool::FlaskMigrate => alembic_pending(listing, state),
        MigrationTool::Django => Ok(listing
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("[ ]"))
            .map(|rest| {
                let id = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                PendingRevision {
                    name: id
                        .split_once('.')
                        .map_or(id.clone(), |(_, n)| n.to_string()),
                    id,
                }
            })
            .filter(|p| !p.id.is_empty())
            .collect()),
        MigrationTool::Rails => Ok(listing
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                (words.next()? == "down").then_some(())?;
                let id = words.next()?.to_string();
                id.chars().all(|c| c.is_ascii_digit()).then_some(())?;
                Some(PendingRevision {
                    id,
                    name: words.collect::<Vec<_>>().join(" "),
                })
            })
            .collect()),
        MigrationTool::Prisma | MigrationTool::Command => Ok(Vec::new()),
    }
}

/// alembic / Flask-Migrate: the heads its history listing marks
/// (`0003 -> 0004 (head), ...`); empty for other tools.
pub fn alembic_heads(tool: MigrationTool, listing: &str) -> Vec<String> {
    if !matches!(tool, MigrationTool::Alembic | MigrationTool::FlaskMigrate) {
        return Vec::new();
    }
    listing
        .lines()
        .filter_map(|l| {
            let (_, right) = l.split_once(" -> ")?;
            let (head, _) = right.split_once(", ").unwrap_or((right, ""));
            let mut words = head.split_whitespace();
            let rev = words.next()?;
            words.any(|w| w == "(head)").then(|| rev.to_string())
        })
        .collect()
}

/// How many revisions the tool's listing names, applied or not (alembic's
/// history lines, Django's `[X]`/`[ ]` plan lines, Rails's status rows);
/// `None` where the listing does not name them all.
pub fn count_listed(tool: MigrationTool, listing: &str) -> Option<usize> {
    let lines = listing.lines().map(str::trim_start);
    match tool {
        MigrationTool::Alembic | MigrationTool::FlaskMigrate => {
            Some(listing.lines().filter_map(alembic_line).count())
        }
        MigrationTool::Django => Some(
            lines
                .filter(|l| l.starts_with("[X]") || l.starts_with("[ ]"))
                .count(),
        ),
        MigrationTool::Rails => Some(
            lines
                .filter(|l| {
                    let mut w = l.split_whitespace();
                    matches!(w.next(), Some("up" | "down"))
                        && w.next()
                            .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit()))
                })
                .count(),
        ),
        MigrationTool::Prisma | MigrationTool::Command => None,
    }
}

/// Rails migrations in `db/migrate` (`<version>_<name>.rb`), oldest first:
/// all of them are pending while `schema_migrations` does not exist, when
/// `db:migrate:status` only says so and exits 1.
pub fn rails_migration_files(dir: &std::path::Path) -> Vec<PendingRevision> {
    let mut out: Vec<PendingRevision> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".rb")?;
            let (version, words) = stem.split_once('_')?;
            version.chars().all(|c| c.is_ascii_digit()).then_some(())?;
            let mut title: String = words.replace('_', " ");
            if let Some(first) = title.get(..1) {
                title = first.to_uppercase() + &title[1..];
            }
            Some(PendingRevision {
                id: version.to_string(),
                name: title,
            })
        })
        .collect();
    out.sort_by(|a, b| (a.id.len(), a.id.as_str()).cmp(&(b.id.len(), b.id.as_str())));
    out
}

/// One line of `alembic history`: `0001 -> 0002 (head), add email`,
/// `<base> -> 0001, create accounts`, `(0003, 0004) -> 0005 (head)
/// (mergepoint), merge`.
fn alembic_line(line: &str) -> Option<(Vec<String>, String, String)> {
    let (left, right) = line.split_once(" -> ")?;
    let parents: Vec<String> = left
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty() && p != "<base>")
        .collect();
    let (head, message) = right.split_once(", ").unwrap_or((right, ""));
    let rev = head.split_whitespace().next()?.to_string();
    Some((parents, rev, message.trim().to_string()))
}

fn alembic_pending(listing: &str, state: &ToolState) -> Result<Vec<PendingRevision>, String> {
    let mut revisions = Vec::new();
    for line in listing.lines() {
        if let Some(r) = alembic_line(line) {
            revisions.push(r);
        }
    }
    let parents: std::collections::HashMap<&str, &Vec<String>> =
        revisions.iter().map(|(p, r, _)| (r.as_str(), p)).collect();
    for head in &state.revisions {
        if !parents.contains_key(head.as_str()) {
            return Err(format!(
                "the database is at alembic revision {head}, which the migration scripts do not have (a deploy from another branch?)"
            ));
        }
    }
    let mut applied = std::collections::HashSet::new();
    let mut stack: Vec<&str> = state.revisions.iter().map(String::as_str).collect();
    while let Some(r) = stack.pop() {
        if applied.insert(r)
            && let Some(ps) = parents.get(r)
        {
            stack.extend(ps.iter().map(String::as_str));
        }
    }
    // The history lists the newest first.
    Ok(revisions
        .iter()
        .rev()
        .filter(|(_, r, _)| !applied.contains(r.as_str()))
        .map(|(_, r, m)| PendingRevision {
            id: r.clone(),
            name: m.clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(r: &[&str]) -> ToolState {
        ToolState {
            revisions: r.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Revisions come from tables the app's role can write: anything that is
    /// not the tool's own grammar never reaches a command line.
    #[test]
    fn revisions_outside_the_tools_grammar_are_refused() {
        use MigrationTool::*;
        for (tool, good) in [
            (Alembic, "ab12_cd"),
            (FlaskMigrate, "9f1e2d3c4b5a"),
            (Django, "auth.0012_alter_user"),
            (Rails, "20240101120000"),
            (Command, "v1.2 (release)"),
        ] {
            assert!(check_revision(tool, good).is_ok(), "{tool:?} {good}");
        }
        for (tool, bad) in [
            (Alembic, "x;id>/tmp/pwned"),
            (Alembic, "$(id>/tmp/pwned2)"),
            (Alembic, "-1"),
            (FlaskMigrate, "--sql"),
            (Django, "auth"),
            (Django, "auth.0001;rm"),
            (Django, "-x.0001"),
            (Rails, "1 2"),
            (Rails, "-1"),
            (Command, "-rf"),
            (Command, "1\nrm -rf /"),
            (Command, ""),
        ] {
            assert!(check_revision(tool, bad).is_err(), "{tool:?} {bad:?}");
        }
        let err = down_commands(Alembic, &state(&["x;id>/tmp/p"]), &state(&["0002"])).unwrap_err();
        assert!(err.contains("not a revision alembic writes"), "{err}");
        assert!(down_commands(Rails, &state(&["-1"]), &state(&["2"])).is_err());
    }

    const HISTORY: &str = "\
INFO  [alembic.runtime.migration] something logged\n\
(0003, 0004) -> 0005 (head) (mergepoint), merge branches\n\
0002 -> 0004, add phone\n\
0002 -> 0003, add email\n\
0001 -> 0002, add name\n\
<base> -> 0001, create accounts\n";

    #[test]
    fn alembic_pending_is_what_no_head_reaches() {
        let ids = |s: &[&str]| -> Vec<String> {
            alembic_pending(HISTORY, &state(s))
                .unwrap()
                .into_iter()
                .map(|p| p.id)
                .collect()
        };
        assert_eq!(ids(&[]), ["0001", "0002", "0003", "0004", "0005"]);
        assert_eq!(ids(&["0002"]), ["0003", "0004", "0005"]);
        assert_eq!(ids(&["0003"]), ["0004", "0005"]);
        assert_eq!(ids(&["0003", "0004"]), ["0005"]);
        assert!(ids(&["0005"]).is_empty());
        let p = alembic_pending(HISTORY, &state(&["0001"])).unwrap();
        assert_eq!(p[0].name, "add name");
        assert!(
            alembic_pending(HISTORY, &state(&["9999"]))
                .unwrap_err()
                .contains("9999")
        );
    }

    #[test]
    fn heads_are_read_from_the_history_listing() {
        let listing = "0002 -> 0004 (head), b\n0002 -> 0003 (head), a\n<base> -> 0002, first\n";
        assert_eq!(
            alembic_heads(MigrationTool::FlaskMigrate, listing),
            ["0004", "0003"]
        );
        assert!(alembic_heads(MigrationTool::Django, listing).is_empty());
    }

    #[test]
    fn listings_count_every_revision_applied_or_not() {
        assert_eq!(
            count_listed(MigrationTool::Alembic, HISTORY),
            Some(HISTORY.lines().filter(|l| l.contains(" -> ")).count())
        );
        let plan = "[X]  accounts.0001_initial\n[X]  accounts.0002_email\n[ ]  shop.0001_initial\n";
        assert_eq!(count_listed(MigrationTool::Django, plan), Some(3));
        let status = "database: x\n\n Status   Migration ID    Migration Name\n--------------------------------------------------\n   up     20240101000000  Create users\n  down    20240102000000  Add email\n";
        assert_eq!(count_listed(MigrationTool::Rails, status), Some(2));
        assert_eq!(count_listed(MigrationTool::Prisma, "anything"), None);
    }

    #[test]
    fn django_plan_lines_marked_unapplied_are_pending() {
        let plan = "[X]  contenttypes.0001_initial\n[X]  shop.0001_initial\n[ ]  shop.0002_customer_phone\n[ ]  billing.0001_initial\n";
        let p = parse_pending(MigrationTool::Django, plan, &state(&[])).unwrap();
        let ids: Vec<&str> = p.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["shop.0002_customer_phone", "billing.0001_initial"]);
        assert_eq!(p[0].name, "0002_customer_phone");
    }

    #[test]
    fn rails_status_rows_marked_down_are_pending() {
        let status = "\ndatabase: app_production\n\n Status   Migration ID    Migration Name\n--------------------------------------------------\n   up     20260101000000  Create accounts\n  down    20260102000000  Add email to accounts\n   up     20250101000000  ********** NO FILE **********\n";
        let p = parse_pending(MigrationTool::Rails, status, &state(&[])).unwrap();
        assert_eq!(
            p,
            [PendingRevision {
                id: "20260102000000".into(),
                name: "Add email to accounts".into()
            }]
        );
    }

    #[test]
    fn rails_files_are_all_pending_before_the_first_migration() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "20260102000000_add_plan_to_accounts.rb",
            "20260101000000_create_accounts.rb",
            "README.md",
            ".keep",
        ] {
            std::fs::write(d.path().join(f), "").unwrap();
        }
        assert_eq!(
            rails_migration_files(d.path()),
            [
                PendingRevision {
                    id: "20260101000000".into(),
                    name: "Create accounts".into()
                },
                PendingRevision {
                    id: "20260102000000".into(),
                    name: "Add plan to accounts".into()
                }
            ]
        );
    }

    #[test]
    fn down_goes_back_to_the_recorded_state() {
        let a = MigrationTool::Alembic;
        assert_eq!(
            down_commands(a, &state(&["0001"]), &state(&["0003"])).unwrap(),
            ["alembic downgrade 0001"]
        );
        assert_eq!(
            down_commands(a, &state(&[]), &state(&["0001"])).unwrap(),
            ["alembic downgrade base"]
        );
        assert!(
            down_commands(a, &state(&["0001"]), &state(&["0001"]))
                .unwrap()
                .is_empty()
        );
        assert!(down_commands(a, &state(&["a", "b"]), &state(&["c"])).is_err());
        assert_eq!(
            down_commands(
                MigrationTool::FlaskMigrate,
                &state(&["ab12"]),
                &state(&["cd34"])
            )
            .unwrap(),
            ["flask db downgrade ab12"]
        );
        assert_eq!(
            down_commands(
                MigrationTool::Django,
                &state(&["auth.0012_x", "shop.0001_initial"]),
                &state(&["auth.0012_x", "shop.0003_more", "billing.0001_initial"])
            )
            .unwrap(),
            [
                "python manage.py migrate billing zero --noinput",
                "python manage.py migrate shop 0001_initial --noinput"
            ]
        );
        assert_eq!(
            down_commands(
                MigrationTool::Rails,
                &state(&[]),
                &state(&["20260102000000"])
            )
            .unwrap(),
            ["bin/rails db:migrate VERSION=0"]
        );
    }

    #[test]
    fn revisions_from_the_database_are_quoted_for_the_shell() {
        assert_eq!(sh_quote("0001_abc"), "0001_abc");
        assert_eq!(sh_quote("x; rm -rf ~"), "'x; rm -rf ~'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert!(
            down_commands(
                MigrationTool::Alembic,
                &state(&["$(touch pwned)"]),
                &state(&["b"])
            )
            .is_err()
        );
    }

    #[test]
    fn a_merge_point_is_not_an_empty_downgrade() {
        let sql = "BEGIN;\n\n-- Running downgrade 0005 -> 0003, 0004\n\nDELETE FROM alembic_version WHERE alembic_version.version_num = '0005';\n\nINSERT INTO alembic_version (version_num) VALUES ('0003');\n\nINSERT INTO alembic_version (version_num) VALUES ('0004');\n\n-- Running downgrade 0004 -> 0002\n\nUPDATE alembic_version SET version_num='0002' WHERE alembic_version.version_num = '0004';\n\nCOMMIT;\n";
        assert_eq!(
            empty_downgrades(MigrationTool::Alembic, sql),
            [("0005".to_string(), false), ("0004".to_string(), true)]
        );
    }

    #[test]
    fn an_empty_downgrade_is_a_revision_without_down_sql() {
        // `alembic downgrade head:base --sql` for 0003 (data fix, `pass`),
        // 0002 (drops a column) and 0001 (`pass` too).
        let sql = "BEGIN;\n\n-- Running downgrade 0003 -> 0002\n\nUPDATE alembic_version SET version_num='0002' WHERE alembic_version.version_num = '0003';\n\n-- Running downgrade 0002 -> 0001\n\nALTER TABLE accounts DROP COLUMN plan;\n\nUPDATE alembic_version SET version_num='0001' WHERE alembic_version.version_num = '0002';\n\n-- Running downgrade 0001 -> \n\nDELETE FROM alembic_version WHERE alembic_version.version_num = '0001';\n\nDROP TABLE alembic_version;\n\nCOMMIT;\n";
        let found = empty_downgrades(MigrationTool::Alembic, sql);
        let found: Vec<(&str, bool)> = found.iter().map(|(r, e)| (r.as_str(), *e)).collect();
        assert_eq!(found, [("0003", true), ("0002", false), ("0001", true)]);
        assert!(empty_downgrades(MigrationTool::Django, sql).is_empty());
        assert_eq!(
            down_sql_command(MigrationTool::FlaskMigrate, &state(&["0001"])).unwrap(),
            "flask db downgrade --sql head:0001"
        );
        assert_eq!(
            down_sql_command(MigrationTool::Alembic, &state(&[])).unwrap(),
            "alembic downgrade head:base --sql"
        );
        assert!(down_sql_command(MigrationTool::Alembic, &state(&["$(x)"])).is_err());
        assert!(down_sql_command(MigrationTool::Alembic, &state(&["a", "b"])).is_err());
    }

    #[test]
    fn alembic_offline_sql_leaves_out_its_bookkeeping() {
        let sql = "BEGIN;\n\nCREATE TABLE alembic_version (\n    version_num VARCHAR(32) NOT NULL,\n    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n);\n\n-- Running upgrade  -> 0001\n\nCREATE TABLE accounts (id BIGSERIAL);\n\nINSERT INTO alembic_version (version_num) VALUES ('0001') RETURNING alembic_version.version_num;\n\nCOMMIT;\n";
        let t = tidy_sql(MigrationTool::Alembic, sql);
        assert!(t.contains("CREATE TABLE accounts"));
        assert!(!t.contains("alembic_version"), "{t}");
        assert!(!t.contains("version_num"), "{t}");
    }
}
