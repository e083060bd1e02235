//! Security: encryption in transit, the application's role, tenant
//! isolation by row-level security, secrets kept out of files, the audit
//! trail, and weak passwords among configured credential hashes.

use shipsafe_config::Template;
use shipsafe_pg::health;

use super::model::{Category, Def, Evidence, Item, Level};
use crate::credentials;
use crate::facts::{Facts, probe_unknown, some_of};
use shipsafe_protocol::repo;

const TLS: Def = Def {
    id: "tls-in-use",
    category: Category::Security,
    level: Level::Bronze,
    title: "The connection to the database is encrypted",
};
const NOT_SUPERUSER: Def = Def {
    id: "app-role-not-superuser",
    category: Category::Security,
    level: Level::Bronze,
    title: "The application's role is not a superuser",
};
const OWNS_TABLES: Def = Def {
    id: "app-role-owns-no-tables",
    category: Category::Security,
    level: Level::Gold,
    title: "The application's role cannot ALTER or DROP tables",
};
const TENANT_RLS: Def = Def {
    id: "tenant-isolation",
    category: Category::Security,
    level: Level::Silver,
    title: "Tables with a tenant column enforce row-level security",
};
const BYPASS_RLS: Def = Def {
    id: "app-role-no-bypassrls",
    category: Category::Security,
    level: Level::Silver,
    title: "The application's role does not bypass row-level security",
};
const CONFIG_SECRETS: Def = Def {
    id: "no-secret-in-config",
    category: Category::Security,
    level: Level::Bronze,
    title: "shipsafe.toml holds no secret",
};
const REPO_SECRETS: Def = Def {
    id: "no-committed-secrets",
    category: Category::Security,
    level: Level::Silver,
    title: "No secret is committed to the repository",
};
const AUDIT_CHAIN: Def = Def {
    id: "audit-log-intact",
    category: Category::Security,
    level: Level::Bronze,
    title: "shipsafe's audit log chain is intact",
};
const AUDIT_TABLE: Def = Def {
    id: "audit-table-append-only",
    category: Category::Security,
    level: Level::Gold,
    title: "The application's audit table is append-only for the app",
};
const WEAK_PASSWORDS: Def = Def {
    id: "no-weak-passwords",
    category: Category::Security,
    level: Level::Gold,
    title: "No configured account uses a default or common password",
};

pub(super) const DEFS: &[Def] = &[
    TLS,
    NOT_SUPERUSER,
    OWNS_TABLES,
    TENANT_RLS,
    BYPASS_RLS,
    CONFIG_SECRETS,
    REPO_SECRETS,
    AUDIT_CHAIN,
    AUDIT_TABLE,
    WEAK_PASSWORDS,
];

pub(super) async fn items(f: &Facts<'_>) -> Vec<Item> {
    let mut out = vec![tls(f)];
    out.extend(roles(f).await);
    out.push(config_secrets(f));
    out.push(repo_secrets(f));
    out.push(audit_chain(f).await);
    out.push(audit_table(f).await);
    out.push(credentials::weak_passwords(f, &WEAK_PASSWORDS).await);
    out
}

fn tls(f: &Facts<'_>) -> Item {
    let db = match f.db(&TLS) {
        Ok(db) => db,
        Err(item) => return *item,
    };
    let local = f.url.conninfo().is_ok_and(|c| c.is_local());
    let sql = shipsafe_pg::connect::TLS_VERSION_SQL;
    match &db.tls {
        Some(v) => TLS.pass(
            Evidence::sql(sql, format!("this connection is encrypted ({v})"))
                .value(serde_json::json!({ "tls": v })),
        ),
        None if local => TLS.warn(
            Evidence::sql(sql, "this connection is NOT encrypted; the server is on this machine")
                .value(serde_json::json!({ "tls": null, "local": true })),
            "add sslmode=require (or verify-full) to the URL before the database moves to another host",
        ),
        None => TLS.fail(
            Evidence::sql(sql, "this connection is NOT encrypted and crosses a network")
                .value(serde_json::json!({ "tls": null, "local": false })),
            "add sslmode=verify-full (with sslrootcert) or at least sslmode=require to the database URL",
        ),
    }
}

/// The app role's attributes, ownership, and tenant isolation.
async fn roles(f: &Facts<'_>) -> Vec<Item> {
    let db = match &f.db {
        Ok(db) => db,
        Err(why) => {
            return [NOT_SUPERUSER, OWNS_TABLES, TENANT_RLS, BYPASS_RLS]
                .iter()
                .map(|d| f.unreachable(d, why))
                .collect();
        }
    };
    let role = &db.app_role;
    let facts = match health::role(&db.client, role).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(format!(
            "role {role:?} does not exist on the server ([readiness] app_role)"
        )),
        Err(e) => Err(e.message),
    };
    let tenant = f.tenant_column();
    let tables = db.tables(tenant).await;
    let mut out = Vec::new();
    match &facts {
        Ok(r) => {
            out.push(NOT_SUPERUSER.judge(
                !r.superuser,
                Evidence::sql(
                    health::ROLE_SQL,
                    format!(
                        "role {role} is {}a superuser",
                        if r.superuser { "" } else { "not " }
                    ),
                )
                .value(serde_json::json!({ "role": role, "superuser": r.superuser })),
                format!(
                    "let the application log in as a role without SUPERUSER (CREATE ROLE app LOGIN; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app) and set [readiness] app_role = \"app\"; {role} is for migrations only"
                ),
            ));
            out.push(if r.owned_tables == 0 {
                OWNS_TABLES.pass(
                    Evidence::sql(health::ROLE_SQL, format!("role {role} owns no table"))
                        .value(serde_json::json!({ "role": role, "owned_tables": 0 })),
                )
            } else {
                OWNS_TABLES.warn(
                    Evidence::sql(
                        health::ROLE_SQL,
                        format!(
                            "role {role} owns {} tables ({}): the application can ALTER or DROP them",
                            r.owned_tables,
                            r.owned_examples.join(", ")
                        ),
                    )
                    .value(serde_json::json!({
                        "role": role, "owned_tables": r.owned_tables, "examples": r.owned_examples,
                    })),
                    "own the tables with a migration role and grant the app only SELECT, INSERT, UPDATE, DELETE",
                )
            });
        }
        Err(why) => {
            out.push(NOT_SUPERUSER.unknown("database", why.clone(), None));
            out.push(OWNS_TABLES.unknown("database", why.clone(), None));
        }
    }
    let tables = match tables {
        Ok(t) => t,
        Err(e) => {
            out.push(probe_unknown(
                &TENANT_RLS,
                db,
                health::TABLES_SQL,
                e.clone(),
            ));
            out.push(probe_unknown(&BYPASS_RLS, db, health::TABLES_SQL, e));
            return out;
        }
    };
    let scoped: Vec<&health::TableFacts> = tables.iter().filter(|t| t.has_tenant_column).collect();
    let mut problems = Vec::new();
    for t in &scoped {
        let name = t.table.display();
        if !t.rls_enabled {
            problems.push(format!("{name}: row-level security is off"));
        } else if !t.rls_forced {
            problems.push(format!(
                "{name}: row-level security is not forced (the owner bypasses it)"
            ));
        } else if t.policies == 0 {
            problems.push(format!("{name}: no policy (every row is hidden)"));
        }
    }
    let value = serde_json::json!({
        "tenant_column": tenant,
        "tables": scoped.iter().map(|t| serde_json::json!({
            "table": t.table.display(), "rls_enabled": t.rls_enabled,
            "rls_forced": t.rls_forced, "policies": t.policies,
        })).collect::<Vec<_>>(),
        "problems": problems,
    });
    out.push(if scoped.is_empty() {
        TENANT_RLS.pass(
            Evidence::sql(health::TABLES_SQL, format!("no table has a {tenant} column"))
                .value(value),
        )
    } else {
        TENANT_RLS.judge(
            problems.is_empty(),
            Evidence::sql(
                health::TABLES_SQL,
                if problems.is_empty() {
                    format!(
                        "all {} tables with {tenant} have row-level security enabled and forced, with policies",
                        scoped.len()
                    )
                } else {
                    format!("{} of {} tables with {tenant}: {}", problems.len(), scoped.len(), some_of(&problems, 4))
                },
            )
            .value(value),
            format!(
                "for each: ALTER TABLE t ENABLE ROW LEVEL SECURITY; ALTER TABLE t FORCE ROW LEVEL SECURITY; CREATE POLICY tenant ON t USING ({tenant} = current_setting('app.tenant_id')::int)"
            ),
        )
    });
    out.push(match &facts {
        Ok(_) if scoped.is_empty() => BYPASS_RLS.pass(Evidence::sql(
            health::ROLE_SQL,
            format!("no table has a {tenant} column to isolate"),
        )),
        Ok(r) => {
            let bypass = r.bypass_rls || r.superuser;
            BYPASS_RLS.judge(
                !bypass,
                Evidence::sql(
                    health::ROLE_SQL,
                    if r.superuser {
                        format!("role {role} is a superuser: every row-level security policy is skipped")
                    } else if r.bypass_rls {
                        format!("role {role} has BYPASSRLS: every row-level security policy is skipped")
                    } else {
                        format!("role {role} is subject to row-level security")
                    },
                )
                .value(serde_json::json!({ "role": role, "bypassrls": r.bypass_rls, "superuser": r.superuser })),
                format!("ALTER ROLE {role} NOBYPASSRLS (and NOSUPERUSER)"),
            )
        }
        Err(why) => BYPASS_RLS.unknown("database", why.clone(), None),
    });
    out
}

fn config_secrets(f: &Facts<'_>) -> Item {
    let source = f.config.source();
    let mut hits: Vec<String> = Vec::new();
    if let Ok(doc) = source.parse::<toml::Table>() {
        let mut found = Vec::new();
        walk_toml(&toml::Value::Table(doc), "", &mut found);
        for (path, value) in found {
            let line = line_of(source, &value);
            hits.push(format!("{path} (line {line})"));
        }
    }
    let rel = f.config.path().file_name().map_or_else(
        || "shipsafe.toml".to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    CONFIG_SECRETS.judge(
        hits.is_empty(),
        Evidence::new(
            "config",
            if hits.is_empty() {
                format!("{rel}: every password, token and key is a ${{VAR}} reference")
            } else {
                format!("{rel} has secrets written out: {}", some_of(&hits, 5))
            },
        )
        .value(serde_json::json!({ "keys": hits })),
        "replace each value with a reference such as \"${DB_PASSWORD}\" and rotate the secret: it is in git history",
    )
}

/// String values that are secrets written out: under a secret-like key,
/// or a URL with a password. Open environments on this machine are left
/// alone (a local development password protects nothing).
fn walk_toml(v: &toml::Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk_toml(v, &p, out);
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                walk_toml(v, &format!("{path}[{i}]"), out);
            }
        }
        toml::Value::String(s) => {
            let key = path.rsplit('.').next().unwrap_or(path);
            let literal = Template::new(s).is_ok_and(|t| {
                t.parts()
                    .iter()
                    .any(|p| matches!(p, shipsafe_config::template::Part::Literal(l) if !l.trim().is_empty()))
            });
            let url_password =
                Template::new(s).is_ok_and(|t| shipsafe_config::has_literal_password(&t));
            let local = ["@localhost", "@127.0.0.1", "@[::1]", "host=/", "@/"]
                .iter()
                .any(|h| s.contains(h));
            if (repo::is_secret_key(key) && literal && !key.ends_with("_env"))
                || (url_password && !local)
            {
                out.push((path.to_string(), s.clone()));
            }
        }
        _ => {}
    }
}

fn line_of(source: &str, value: &str) -> usize {
    source
        .find(value)
        .map_or(0, |i| source[..i].matches('\n').count() + 1)
}

fn repo_secrets(f: &Facts<'_>) -> Item {
    let hits = repo::committed_secrets(f.config.root());
    let shown: Vec<String> = hits.iter().map(repo::Hit::display).collect();
    REPO_SECRETS.judge(
        hits.is_empty(),
        Evidence::new(
            "repository",
            if hits.is_empty() {
                "no private key, cloud key, URL with a password or filled .env file in the tracked files".to_string()
            } else {
                format!("secrets in tracked files: {}", some_of(&shown, 5))
            },
        )
        .value(&hits),
        "remove them (git rm --cached for .env files), move them to the environment or a secret store, and rotate each: they stay in git history",
    )
}

async fn audit_chain(f: &Facts<'_>) -> Item {
    let mut report = match shipsafe_protocol::commands::log::verify(f.config) {
        Ok(r) => r,
        Err(e) => {
            return AUDIT_CHAIN.unknown(
                "audit log",
                format!("the audit log cannot be read: {e}"),
                None,
            );
        }
    };
    shipsafe_protocol::anchor::check(f.config, f.vars, &mut report).await;
    let value = serde_json::json!({
        "entries": report.entries, "head": report.head_hash,
        "anchors_checked": report.anchors_checked, "problems": report.problems,
    });
    if report.ok {
        AUDIT_CHAIN.pass(
            Evidence::new(
                "audit log",
                format!(
                    "{} entries, chain intact{}",
                    report.entries,
                    if report.anchors_checked.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; head matches the copies in {}",
                            report.anchors_checked.join(", ")
                        )
                    }
                ),
            )
            .value(value),
        )
    } else {
        AUDIT_CHAIN.fail(
            Evidence::new(
                "audit log",
                format!(
                    "the chain breaks: {}",
                    report
                        .problems
                        .iter()
                        .map(|p| format!("entry {}: {}", p.seq, p.problem))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            )
            .value(value),
            "find out who changed state.db (shipsafe log verify shows where); restore it from a copy",
        )
    }
}

async fn audit_table(f: &Facts<'_>) -> Item {
    let Some(table) = f.readiness().audit_table.clone() else {
        return AUDIT_TABLE.unknown(
            "config",
            "no [readiness] audit_table configured: there is no append-only audit table to check",
            Some("create an audit table the app may only INSERT into, and set [readiness] audit_table = \"audit_log\"".into()),
        );
    };
    let db = match f.db(&AUDIT_TABLE) {
        Ok(db) => db,
        Err(item) => return *item,
    };
    let role = &db.app_role;
    match health::role(&db.client, role).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return AUDIT_TABLE.unknown(
                "database",
                format!("role {role:?} does not exist on the server ([readiness] app_role)"),
                None,
            );
        }
        Err(e) => return probe_unknown(&AUDIT_TABLE, db, health::ROLE_SQL, e),
    }
    match health::table_writes(&db.client, role, &table).await {
        Ok(None) => AUDIT_TABLE.fail(
            Evidence::sql(
                health::TABLE_WRITES_SQL,
                format!("table {table} does not exist"),
            ),
            format!("create {table}, or fix [readiness] audit_table"),
        ),
        Ok(Some(w)) => {
            let mut can = Vec::new();
            if w.owner {
                can.push("owns it");
            }
            for (ok, what) in [
                (w.update, "UPDATE"),
                (w.delete, "DELETE"),
                (w.truncate, "TRUNCATE"),
            ] {
                if ok {
                    can.push(what);
                }
            }
            AUDIT_TABLE.judge(
                can.is_empty(),
                Evidence::sql(
                    health::TABLE_WRITES_SQL,
                    if can.is_empty() {
                        format!("role {role} may only read and insert into {table}")
                    } else {
                        format!("role {role} can rewrite {table}: {}", can.join(", "))
                    },
                )
                .value(serde_json::json!({ "table": table, "role": role, "privileges": &w })),
                format!("REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM {role} (and give the table another owner)"),
            )
        }
        Err(e) => probe_unknown(&AUDIT_TABLE, db, health::TABLE_WRITES_SQL, e),
    }
}
