//! `readiness` on seed 002's ERP: tenants with and without row-level
//! security, an app role that bypasses it, a duplicate, an invalid and a
//! missing index, a sequence at 80%, a stale backup, a tampered archive, a
//! default admin password, an app that migrates on boot. Each problem is
//! named with its evidence, then fixed, and its item flips to pass. Run as
//! a plain role, what that role cannot see is `unknown`, never `pass`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Project, code, json, stderr, stdout, write};
use shipsafe_testkit::TestDb;

const ERP: &str = "
create extension pgcrypto;
create table tenants (id serial primary key, name text not null);
create table users (id serial primary key, tenant_id int not null references tenants (id),
                    username text not null, hashed_password text not null, role text not null);
create table branches (id serial primary key, tenant_id int not null references tenants (id), name text);
create table invoices (id serial primary key, tenant_id int not null references tenants (id),
                       branch_id int references branches (id), amount numeric);
create table counters (id smallserial primary key, note text);
create index users_tenant on users (tenant_id);
create index users_tenant_again on users (tenant_id);
create index branches_tenant on branches (tenant_id);
create index invoices_tenant on invoices (tenant_id);
alter table users enable row level security;
alter table users force row level security;
create policy tenant on users using (tenant_id = current_setting('app.tenant_id', true)::int);
alter table invoices enable row level security;
create policy tenant on invoices using (tenant_id = current_setting('app.tenant_id', true)::int);
insert into tenants (name) values ('Acme'), ('Globex');
insert into branches (tenant_id, name) values (1, 'HQ'), (1, 'HQ'), (2, 'Depot');
insert into users (tenant_id, username, hashed_password, role) values
  (1, 'admin@acme.test', crypt('admin123', gen_salt('bf', 4)), 'admin'),
  (2, 'ops@globex.test', crypt('a long and unusual passphrase 42', gen_salt('bf', 4)), 'admin');
select setval('counters_id_seq', 26500);
";

fn item<'a>(card: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    card["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("no item {id} in {card}"))
}

fn status(card: &serde_json::Value, id: &str) -> String {
    item(card, id)["status"].as_str().unwrap().to_string()
}

fn summary(card: &serde_json::Value, id: &str) -> String {
    item(card, id)["evidence"]["summary"]
        .as_str()
        .unwrap()
        .to_string()
}

fn readiness(p: &Project, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["readiness", "prod"];
    args.extend_from_slice(extra);
    let (code, v, err) = p.json(&args);
    assert!(code == 0 || code == 1, "exit {code}: {err}");
    (code, v)
}

async fn erp(db: &TestDb, app_role: &str) {
    let c = db.client().await;
    c.batch_execute(ERP).await.unwrap();
    c.batch_execute(&format!(
        "drop role if exists {app_role}; create role {app_role} login bypassrls"
    ))
    .await
    .unwrap();
    // A unique index built concurrently over duplicates fails and stays,
    // invalid, as on a real server.
    let failed = c
        .batch_execute("create unique index concurrently branches_name_unique on branches (name)")
        .await;
    assert!(failed.is_err());
}

fn config(app_role: &str) -> String {
    format!(
        "[readiness]\napp_role = \"{app_role}\"\n\
         credentials = [{{ table = \"users\", user = \"username\", hash = \"hashed_password\", where = \"role = 'admin'\" }}]\n\n\
         [[checks]]\nname = \"every user has a tenant\"\nsql = \"select count(*) from users where tenant_id is null\"\nexpect = \"= 0\"\n"
    )
}

#[tokio::test]
async fn each_problem_is_named_then_flips_to_pass_when_fixed() {
    let db = TestDb::new().await;
    let role = format!(
        "erp_app_{}",
        db.name().rsplit('_').take(2).collect::<Vec<_>>().join("_")
    );
    erp(&db, &role).await;
    let p = Project::new(&[("prod", "protected", db.url())], &config(&role));
    write(
        p.dir.path(),
        "Procfile",
        "web: flask db upgrade && gunicorn erp:app\n",
    );
    write(p.dir.path(), ".env", "SECRET_KEY=s3cr3t-committed\n");

    // A backup from 30 hours ago, by its manifest, whose archive then rots.
    let (c, b, err) = p.json(&["backup", "create", "prod"]);
    assert_eq!(c, 0, "{err}");
    let id = b["id"].as_str().unwrap().to_string();
    let manifest_path = p.backups_dir().join(format!("{id}.json"));
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let old = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(30);
    m["created_at"] = format!("{old:.3}").into();
    std::fs::write(&manifest_path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let archive = p.backups_dir().join(format!("{id}.dump.zst"));
    let mut bytes = std::fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&archive, bytes).unwrap();

    let (exit, card) = readiness(&p, &["--min-level", "bronze"]);
    assert_eq!(exit, 1, "below the required level is exit 1");
    assert_eq!(card["level"], "not-ready");
    assert_eq!(card["meets_min_level"], false);
    for i in card["items"].as_array().unwrap() {
        for key in ["id", "category", "status", "evidence", "measured_at", "fix"] {
            assert!(i.get(key).is_some(), "{key} missing in {i}");
        }
    }
    let expect_fail = |id: &str, names: &[&str]| {
        assert_eq!(status(&card, id), "fail", "{id}: {}", item(&card, id));
        let s = summary(&card, id);
        for n in names {
            assert!(s.contains(n), "{id} evidence does not name {n}: {s}");
        }
        assert!(
            item(&card, id)["fix"]
                .as_str()
                .is_some_and(|f| !f.is_empty())
        );
    };
    expect_fail(
        "tenant-isolation",
        &[
            "branches: row-level security is off",
            "invoices: row-level security is not forced",
        ],
    );
    assert!(!summary(&card, "tenant-isolation").contains("users:"));
    expect_fail("app-role-no-bypassrls", &[&role, "BYPASSRLS"]);
    expect_fail(
        "duplicate-indexes",
        &["users_tenant_again", "covered by users_tenant"],
    );
    expect_fail("invalid-indexes", &["branches_name_unique"]);
    expect_fail("fk-indexes", &["invoices(branch_id) -> branches"]);
    expect_fail(
        "sequence-headroom",
        &["counters_id_seq at 81%", "counters.id (smallint)"],
    );
    expect_fail("backup-recent", &[&id, "30.0 h"]);
    expect_fail("backup-checksum", &[&id, "the stored archive changed"]);
    expect_fail("restore-drill-recent", &["was ever restored"]);
    expect_fail("no-weak-passwords", &["admin@acme.test"]);
    assert!(!summary(&card, "no-weak-passwords").contains("ops@globex"));
    expect_fail("no-migrate-on-boot", &["Procfile:1", "flask db upgrade"]);
    expect_fail("no-committed-secrets", &[".env:1", "SECRET_KEY"]);
    expect_fail("runbook-current", &["runbooks/prod.md"]);
    // A secret is named, never shown.
    assert!(!card.to_string().contains("s3cr3t-committed"));
    assert!(!card.to_string().contains("admin123"));
    assert_eq!(status(&card, "checks-passing"), "pass");
    assert_eq!(status(&card, "smoke-passing"), "unknown");
    assert!(
        item(&card, "fk-indexes")["evidence"]["query"]
            .as_str()
            .unwrap()
            .contains("pg_constraint")
    );

    // Fix each.
    let c = db.client().await;
    c.batch_execute(&format!(
        "alter table branches enable row level security; alter table branches force row level security;
         create policy tenant on branches using (tenant_id = current_setting('app.tenant_id', true)::int);
         alter table invoices force row level security;
         alter role {role} nobypassrls;
         drop index users_tenant_again; drop index branches_name_unique;
         create index invoices_branch on invoices (branch_id);
         alter table counters alter column id type bigint; alter sequence counters_id_seq as bigint;
         update users set hashed_password = crypt('a-Better-one-' || id, gen_salt('bf', 4));"
    ))
    .await
    .unwrap();
    std::fs::remove_file(p.dir.path().join("Procfile")).unwrap();
    std::fs::remove_file(p.dir.path().join(".env")).unwrap();
    let (c2, b2, err) = p.json(&["backup", "create", "prod"]);
    assert_eq!(c2, 0, "{err}");
    let fresh = b2["id"].as_str().unwrap().to_string();
    let (c3, _, err) = p.json(&["backup", "verify", &fresh]);
    assert_eq!(c3, 0, "{err}");
    let (c4, r, err) = p.json(&["runbook", "prod"]);
    assert_eq!(c4, 0, "{err}");
    let book = std::fs::read_to_string(r["path"].as_str().unwrap()).unwrap();
    assert!(
        book.contains(&format!(
            "shipsafe backup restore {fresh} --to prod --confirm prod"
        )),
        "{book}"
    );
    assert!(
        book.contains("(measured RTO)") && book.contains("every user has a tenant"),
        "{book}"
    );

    let md = p.dir.path().join("readiness.md");
    let (_, card) = readiness(&p, &["--since", "30d", "--markdown", md.to_str().unwrap()]);
    for id in [
        "tenant-isolation",
        "app-role-no-bypassrls",
        "duplicate-indexes",
        "invalid-indexes",
        "fk-indexes",
        "sequence-headroom",
        "backup-recent",
        "backup-checksum",
        "restore-drill-recent",
        "no-weak-passwords",
        "no-migrate-on-boot",
        "no-committed-secrets",
        "runbook-current",
    ] {
        assert_eq!(status(&card, id), "pass", "{id}: {}", item(&card, id));
    }
    assert!(summary(&card, "backup-recent").contains(&fresh));
    assert!(summary(&card, "restore-drill-recent").contains("(RTO)"));
    assert!(summary(&card, "tenant-isolation").contains("all 3 tables with tenant_id"));
    let trend = &card["trend"];
    assert!(trend["points"].as_array().unwrap().len() >= 2, "{trend}");
    let fixed: Vec<&str> = trend["fixed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        fixed.contains(&"tenant-isolation") && fixed.contains(&"backup-recent"),
        "{fixed:?}"
    );
    let report = std::fs::read_to_string(&md).unwrap();
    assert!(report.contains("| PASS | `tenant-isolation`"), "{report}");
    // The superuser shipsafe connects as is still reported: it is not the
    // app role, so that item is about erp_app.
    assert_eq!(status(&card, "app-role-not-superuser"), "pass");

    let _ = c
        .batch_execute(&format!("drop role if exists {role}"))
        .await;
}

#[tokio::test]
async fn a_plain_role_sees_unknown_where_the_owner_sees_failures() {
    let db = TestDb::new().await;
    let role = format!(
        "erp_ro_{}",
        db.name().rsplit('_').take(2).collect::<Vec<_>>().join("_")
    );
    erp(&db, &role).await;
    let app_url = db
        .url()
        .expose()
        .replacen("://postgres@", &format!("://{role}@"), 1);
    assert_ne!(
        app_url,
        db.url().expose(),
        "test URL has no postgres user to swap"
    );
    let extra = config(&role).replace("[readiness]\n", "[readiness]\nlong_running = \"1s\"\n");
    let owner = Project::new(&[("prod", "guarded", db.url())], &extra);
    let app_db = shipsafe_config::DbUrl::new(app_url.clone());
    let plain = Project::new(&[("prod", "guarded", &app_db)], &extra);

    // Another session of the owner sits idle in a transaction.
    let holder = db.client().await;
    holder.batch_execute("begin; select 1").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let (_, seen) = readiness(&owner, &[]);
    let (_, blind) = readiness(&plain, &[]);
    holder.batch_execute("rollback").await.unwrap();

    assert_eq!(
        status(&seen, "idle-in-transaction"),
        "fail",
        "{}",
        item(&seen, "idle-in-transaction")
    );
    assert_eq!(
        status(&blind, "idle-in-transaction"),
        "unknown",
        "{}",
        item(&blind, "idle-in-transaction")
    );
    assert!(summary(&blind, "idle-in-transaction").contains("pg_read_all_stats"));
    assert_eq!(status(&seen, "sequence-headroom"), "fail");
    assert_eq!(
        status(&blind, "sequence-headroom"),
        "unknown",
        "{}",
        item(&blind, "sequence-headroom")
    );
    // The credentials table is not readable by the plain role.
    assert_eq!(status(&seen, "no-weak-passwords"), "fail");
    assert_eq!(
        status(&blind, "no-weak-passwords"),
        "unknown",
        "{}",
        item(&blind, "no-weak-passwords")
    );
    // Nothing the owner sees failing is a pass for the plain role.
    for i in seen["items"].as_array().unwrap() {
        let id = i["id"].as_str().unwrap();
        if i["status"] == "fail" && i["category"] != "data-protection" {
            assert_ne!(
                status(&blind, id),
                "pass",
                "{id} passes without the privilege to see it"
            );
        }
    }
    let _ = db
        .client()
        .await
        .batch_execute(&format!("drop role if exists {role}"))
        .await;
}

#[tokio::test]
async fn waivers_apply_expire_are_audited_and_must_name_an_item() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("create table branches (id serial primary key, tenant_id int not null, name text); create index on branches (tenant_id);")
        .await
        .unwrap();
    let until = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 5))
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let p = Project::new(
        &[("prod", "guarded", db.url())],
        &format!(
            "[[readiness.waive]]\nid = \"tenant-isolation\"\nreason = \"RLS lands in release 4.2\"\nuntil = {until}\n\n\
             [[readiness.waive]]\nid = \"pg-stat-statements\"\nreason = \"provider adds it\"\nuntil = \"2020-01-01\"\n"
        ),
    );
    let (_, card) = readiness(&p, &[]);
    let t = item(&card, "tenant-isolation");
    assert_eq!(t["status"], "waived", "{t}");
    assert_eq!(t["waiver"]["status_without"], "fail");
    assert_eq!(t["waiver"]["reason"], "RLS lands in release 4.2");
    assert_eq!(t["waiver"]["days_left"], 6);
    // Expired: the item counts as it is again.
    assert_eq!(status(&card, "pg-stat-statements"), "fail");
    let expiring = card["expiring_waivers"].to_string();
    assert!(
        expiring.contains("tenant-isolation") && expiring.contains("expired on 2020-01-01"),
        "{expiring}"
    );
    let (_, log, _) = p.json(&["log"]);
    let entry = &log["entries"][0];
    assert_eq!(entry["command"], "readiness");
    assert_eq!(entry["detail"]["waived"][0]["id"], "tenant-isolation");

    // Text, Markdown and HTML show it too.
    let out = p.cmd().args(["readiness", "prod"]).output().unwrap();
    assert!(
        stdout(&out).contains("waived  tenant-isolation"),
        "{}",
        stdout(&out)
    );
    let out = p
        .cmd()
        .args(["--format", "html", "readiness", "prod"])
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("<tr id=\"tenant-isolation\"><td class=\"waived\">"),
        "{}",
        stdout(&out)
    );
    let out = p.cmd().args(["--format", "md", "status"]).output().unwrap();
    assert_eq!(code(&out), 64, "{}", stderr(&out));

    write(
        p.dir.path(),
        "shipsafe.toml",
        &std::fs::read_to_string(p.dir.path().join("shipsafe.toml"))
            .unwrap()
            .replace("id = \"tenant-isolation\"", "id = \"tenant-isolaton\""),
    );
    let out = p
        .cmd()
        .args(["--format", "json", "readiness", "prod"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(
        json(&out)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenant-isolaton")
    );
}
