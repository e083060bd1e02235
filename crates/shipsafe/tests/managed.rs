//! Dumps of managed databases restore into scratch clusters: provider roles
//! in policies, grants and owners; event triggers and publications; a
//! database named `postgres`; and an extension the scratch server lacks,
//! which fails clearly before anything is restored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Project, code, json, stderr, stdout};
use shipsafe_testkit::TestDb;

const SUPABASE_LIKE: &str = r#"
do $$ begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then create role anon nologin; end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then create role authenticated nologin; end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then create role service_role nologin bypassrls; end if;
end $$;
create schema app;
create table public.profiles (id bigint primary key, owner_id uuid not null, name text);
insert into public.profiles select g, gen_random_uuid(), 'user ' || g from generate_series(1, 50) g;
alter table public.profiles enable row level security;
alter table public.profiles force row level security;
create policy "own rows" on public.profiles for select to authenticated using (owner_id = gen_random_uuid());
create policy "service" on public.profiles to service_role using (true);
grant select on public.profiles to anon, authenticated;
grant all on public.profiles to service_role;
create table app.jobs (id int primary key);
alter table app.jobs owner to service_role;
create function public.ddl_watch() returns event_trigger language plpgsql as $f$ begin end $f$;
create event trigger watch_ddl on ddl_command_end execute function public.ddl_watch();
create publication realtime for table public.profiles;
"#;

#[tokio::test]
async fn a_supabase_like_dump_is_verified_in_a_scratch_cluster() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(SUPABASE_LIKE)
        .await
        .unwrap();
    let p = Project::new(&[("production", "guarded", db.url())], "");
    let (c, m, err) = p.json(&["backup", "create", "production"]);
    assert_eq!(c, 0, "{err}");
    let roles: Vec<String> = m["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    for r in ["anon", "authenticated", "service_role"] {
        assert!(
            roles.iter().any(|x| x == r),
            "{r} not in manifest roles {roles:?}"
        );
    }
    assert!(
        m["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("plpgsql ")),
        "{m}"
    );
    assert!(
        m["server_version"].as_str().unwrap().starts_with("15"),
        "{m}"
    );
    let id = m["id"].as_str().unwrap().to_string();
    let o = p
        .cmd()
        .args(["--format", "json", "backup", "verify", &id])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let v = json(&o);
    let last = v["verifications"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["ok"], true, "{v}");
}

/// An extension installed where the database runs but not where the
/// restore proof runs: installed into the server's extension folder for the
/// backup, removed before the verify.
struct FakeExtension {
    files: Vec<std::path::PathBuf>,
}

impl FakeExtension {
    fn install(name: &str) -> Self {
        let bins = shipsafe_pg::PgBinaries::find(Some(15), &["pg_config"]).unwrap();
        let out = std::process::Command::new(bins.path("pg_config"))
            .arg("--sharedir")
            .output()
            .unwrap();
        let dir =
            std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("extension");
        let control = dir.join(format!("{name}.control"));
        let sql = dir.join(format!("{name}--1.0.sql"));
        std::fs::write(&control, "default_version = '1.0'\nrelocatable = true\n").unwrap();
        std::fs::write(
            &sql,
            format!("create function {name}_answer() returns int language sql as 'select 42';\n"),
        )
        .unwrap();
        Self {
            files: vec![control, sql],
        }
    }

    fn remove(&self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

impl Drop for FakeExtension {
    fn drop(&mut self) {
        self.remove();
    }
}

#[tokio::test]
async fn an_extension_the_scratch_server_lacks_fails_clearly() {
    let name = format!("shipsafe_fake_{}", std::process::id());
    let ext = FakeExtension::install(&name);
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(&format!(
            "create extension {name}; create extension pgcrypto; create table t (id int primary key); insert into t values (1)"
        ))
        .await
        .unwrap();
    let p = Project::new(&[("production", "guarded", db.url())], "");
    let (c, m, err) = p.json(&["backup", "create", "production"]);
    assert_eq!(c, 0, "{err}");
    let id = m["id"].as_str().unwrap().to_string();
    ext.remove();
    let o = p.cmd().args(["backup", "verify", &id]).output().unwrap();
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let e = stderr(&o);
    assert!(e.contains(&name), "{e}");
    assert!(
        !e.contains("pgcrypto,") && !e.contains(": pgcrypto"),
        "available extensions are not named: {e}"
    );
    assert!(e.contains("Nothing was restored"), "{e}");
    // Never counted as a proof.
    let listed = p.json(&["backup", "list"]).1;
    let b = listed["backups"]
        .as_array()
        .or(listed.as_array())
        .unwrap()
        .iter()
        .find(|b| b["id"] == id.as_str())
        .unwrap()
        .clone();
    assert!(
        b["verifications"]
            .as_array()
            .is_none_or(|v| v.iter().all(|v| v["ok"] == false)),
        "{b}"
    );
}

/// `[backups] exclude_schemas` leaves a provider's schema out of the dump.
#[tokio::test]
async fn excluded_schemas_are_not_dumped() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "create schema auth; create table auth.users (id int); create table public.t (id int)",
        )
        .await
        .unwrap();
    let p = Project::new(
        &[("production", "guarded", db.url())],
        "[backups]\nexclude_schemas = [\"auth\"]\n",
    );
    let (c, m, err) = p.json(&["backup", "create", "production"]);
    assert_eq!(c, 0, "{err}");
    assert_eq!(m["excluded_schemas"], serde_json::json!(["auth"]));
    let id = m["id"].as_str().unwrap();
    let archive = std::fs::read_dir(p.backups_dir())
        .unwrap()
        .flatten()
        .find(|e| {
            e.file_name().to_string_lossy().starts_with(id)
                && !e.file_name().to_string_lossy().ends_with(".json")
        })
        .unwrap()
        .path();
    let raw = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -dc '{}' | pg_restore --list",
            archive.display()
        ))
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&raw.stdout);
    assert!(list.contains("TABLE public t"), "{list}");
    assert!(!list.contains("auth"), "{list}");
}
