//! docs/configuration.md is the reference: every `toml` block in it parses
//! strictly, and the complete example sets every documented section.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use shipsafe_config::{CloneSource, Config, Expectation, MaskKind, Protection, VarSource};

fn doc() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    std::fs::read_to_string(p).unwrap()
}

fn toml_blocks(md: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match (&mut cur, line.trim_start()) {
            (None, l) if l.starts_with("```toml") => cur = Some(String::new()),
            (Some(b), "```") => {
                blocks.push(std::mem::take(b));
                cur = None;
            }
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

#[test]
fn every_block_in_the_reference_parses() {
    let blocks = toml_blocks(&doc());
    assert!(!blocks.is_empty());
    for b in &blocks {
        Config::parse(Path::new("docs/configuration.md"), b).unwrap();
    }
    // The managed-provider page's examples are real configuration too.
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/managed.md");
    let managed = toml_blocks(&std::fs::read_to_string(p).unwrap());
    assert!(!managed.is_empty());
    for b in &managed {
        Config::parse(Path::new("docs/managed.md"), b).unwrap();
    }
}

#[test]
fn complete_example_means_what_it_says() {
    let text = toml_blocks(&doc()).remove(0);
    let c = Config::parse(Path::new("/project/shipsafe.toml"), &text).unwrap();
    let f = c.file();
    assert_eq!(f.project.name.as_deref(), Some("sme-management"));
    assert_eq!(c.state_dir(), Path::new("/project/.shipsafe"));
    let names: Vec<&str> = c.environments().map(|e| e.name).collect();
    assert_eq!(
        names,
        ["local", "staging", "production"],
        "file order is kept"
    );
    let prod = c.environment("production").unwrap();
    assert_eq!(prod.protection(), Protection::Protected);
    assert!(prod.config.window.is_some());
    assert_eq!(prod.config.git_branch.as_deref(), Some("main"));
    assert_eq!(f.migrations.lock_timeout.as_millis(), 3000);
    assert_eq!(f.migrations.statement_timeout.as_millis(), 1_800_000);
    assert_eq!(f.backups.retention.keep_monthly, 12);
    assert!(f.backups.s3_allow_http);
    assert_eq!(f.rehearsal.clone_source(), CloneSource::Scratch);
    assert_eq!(f.lint.small_table_bytes(), 10 << 20);
    assert_eq!(f.lint.small_table_rows(), 100_000);
    assert!(f.backups.exclude_schemas.is_empty());
    assert_eq!(f.checks[0].expect, Expectation::Ge(1));
    assert_eq!(f.smoke.len(), 2);
    assert_eq!(f.smoke[1].capture["token"], "access_token");
    assert_eq!(f.data["tool_access"].references["user"].column, "user_id");
    assert_eq!(
        f.data["tools"].renames["Email Templates management"],
        "Email Templates"
    );
    assert_eq!(*f.mask["employees.bank_account"].get_ref(), MaskKind::Null);
    assert_eq!(
        f.readiness.credentials[0].filter.as_deref(),
        Some("role in ('admin','superadmin')")
    );

    let vars: [(&str, &str); 1] = [("DB_PASSWORD", "pw-from-env")];
    let url = c
        .database_url("production", &vars as &dyn VarSource)
        .unwrap();
    assert_eq!(
        url.expose(),
        "postgres://app:pw-from-env@db.internal:5432/app?sslmode=require"
    );
    assert_eq!(
        url.to_string(),
        "postgres://app:***@db.internal:5432/app?sslmode=require"
    );
}

#[test]
fn defaults_apply_to_a_minimal_file() {
    let c = Config::parse(
        Path::new("/p/shipsafe.toml"),
        "[environments.prod]\ndatabase_url = \"${DATABASE_URL}\"\n",
    )
    .unwrap();
    let f = c.file();
    assert_eq!(
        c.environment("prod").unwrap().protection(),
        Protection::Guarded
    );
    assert_eq!(f.migrations.dir, Path::new("migrations"));
    assert_eq!(f.migrations.lock_retries, 5);
    assert_eq!(f.backups.compression_level, 1);
    assert_eq!(f.backups.retention.keep_last, 10);
    assert_eq!(f.lint.small_table_bytes(), 10 << 20);
    assert_eq!(f.lint.small_table_rows(), 100_000);
    assert!(!c.environment("prod").unwrap().config.allow_plaintext);
    assert_eq!(c.state_dir(), Path::new("/p/.shipsafe"));
}
