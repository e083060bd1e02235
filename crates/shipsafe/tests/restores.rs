//! Restores compared with the stock tools. A source database holds about
//! every kind of object (extensions, partitions with sub-partitions and a
//! default, inheritance, unlogged tables, exclusion and deferrable and NOT
//! VALID constraints, every index method, materialized views, rules,
//! triggers in every state, event triggers, functions whose bodies look like
//! restore commands, BEGIN ATOMIC bodies, forced row-level security, a
//! publication, a foreign server, names with newlines, comments with `;`,
//! roles with grants and default privileges, large objects with owners,
//! privileges and comments). Every way shipsafe restores it (into an
//! environment, twice; `clone`; `deploy` + `rollback`; `backup verify`) must
//! give what `pg_dump -Fc | pg_restore` into a new database gives, and every
//! failure (an error in post-data, a failing check, kill -9) must leave the
//! target exactly as it was.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use common::Project;
use common::fidelity::{Fidelity, assert_same, fidelity};
use shipsafe_config::DbUrl;
use shipsafe_testkit::TestDb;

/// Roles for one test. Declared before its databases, so they are dropped
/// after them.
struct Roles {
    server: DbUrl,
    owner: String,
    reader: String,
    app: String,
    mv_owner: String,
}

impl Roles {
    async fn new(db: &TestDb) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "fid{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let r = Self {
            server: shipsafe_testkit::with_database(db.url(), "postgres"),
            owner: format!("{tag}_owner"),
            reader: format!("{tag}_reader"),
            app: format!("{tag}_app"),
            mv_owner: format!("{tag}_mv"),
        };
        let c = db.client().await;
        for role in r.all() {
            c.batch_execute(&format!("create role {role} nologin"))
                .await
                .unwrap();
        }
        r
    }

    fn all(&self) -> Vec<String> {
        vec![
            self.owner.clone(),
            self.reader.clone(),
            self.app.clone(),
            self.mv_owner.clone(),
        ]
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        let (url, roles) = (self.server.clone(), self.all());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(c) = shipsafe_pg::connect(&url).await {
                    for r in roles {
                        let _ = c.batch_execute(&format!("drop role if exists {r}")).await;
                    }
                }
            });
        })
        .join();
    }
}

/// The source: every kind of object a restore must carry.
fn source_sql(r: &Roles) -> String {
    let (owner, reader, app, mvo) = (&r.owner, &r.reader, &r.app, &r.mv_owner);
    format!(
        r#"
create schema app;
create schema "Audit Log";
create schema ext;
create extension pgcrypto;
create extension hstore;
create extension citext schema ext;
create extension pg_trgm;
create extension btree_gist;
create extension "uuid-ossp";
create extension ltree;
create extension cube;
create extension postgres_fdw;

create type app.mood as enum ('sad', 'ok', 'happy');
create type app.pair as (a int, b text);
create domain app.posint as int check (value > 0);
create text search configuration app.english2 (copy = english);

create table app.all_types (
  id int primary key, c_int2 int2, c_int8 int8, c_num numeric(12,3), c_real real, c_float float8,
  c_money money, c_text text, c_varchar varchar(20), c_char char(3), c_bytea bytea, c_bool bool,
  c_date date, c_time time, c_timetz timetz, c_ts timestamp, c_tstz timestamptz, c_interval interval,
  c_uuid uuid, c_json json, c_jsonb jsonb, c_xml xml, c_inet inet, c_cidr cidr, c_mac macaddr,
  c_mac8 macaddr8, c_bit bit(3), c_varbit varbit, c_tsv tsvector, c_tsq tsquery, c_point point,
  c_line line, c_lseg lseg, c_box box, c_path path, c_polygon polygon, c_circle circle,
  c_int4range int4range, c_numrange numrange, c_tsrange tsrange, c_tstzrange tstzrange,
  c_daterange daterange, c_int8range int8range, c_multirange int4multirange, c_intarr int[],
  c_textarr text[], c_mood app.mood, c_pair app.pair, c_posint app.posint, c_hstore hstore,
  c_citext ext.citext, c_ltree ltree, c_cube cube, c_oid oid, c_lsn pg_lsn, c_name name,
  c_snapshot pg_snapshot, c_2d int[][], c_gen numeric generated always as (c_num * 2) stored
);
insert into app.all_types (id, c_int2, c_int8, c_num, c_real, c_float, c_money, c_text, c_varchar,
  c_char, c_bytea, c_bool, c_date, c_time, c_timetz, c_ts, c_tstz, c_interval, c_uuid, c_json, c_jsonb,
  c_xml, c_inet, c_cidr, c_mac, c_mac8, c_bit, c_varbit, c_tsv, c_tsq, c_point, c_line, c_lseg, c_box,
  c_path, c_polygon, c_circle, c_int4range, c_numrange, c_tsrange, c_tstzrange, c_daterange, c_int8range,
  c_multirange, c_intarr, c_textarr, c_mood, c_pair, c_posint, c_hstore, c_citext, c_ltree, c_cube,
  c_oid, c_lsn, c_name, c_snapshot, c_2d)
select g, (g % 30000)::int2, g::int8 * 1000000007, g / 7.0, g / 3.0, -g / 9.0, g * 1.25,
  case g % 5 when 0 then E'tab\there\nnewline\\backslash' when 1 then null when 2 then E'\\.' else 'plain ' || g end,
  'v' || g, 'c' || (g % 10), decode(md5(g::text), 'hex'), g % 2 = 0,
  date '2020-01-01' + g, time '01:02:03' + g * interval '1 second', timetz '10:00+02', timestamp '2021-06-01' + g * interval '1 minute',
  timestamptz '2021-06-01 00:00+00' + g * interval '1 hour', g * interval '1 day 2 hours',
  md5(g::text)::uuid, json_build_object('g', g, 's', 'x;y'), jsonb_build_object('k', g, 'arr', jsonb_build_array(g, 'COPY t FROM stdin;')),
  xmlelement(name item, g), ('10.0.' || (g % 250) || '.1')::inet, '10.1.0.0/16', '08:00:2b:01:02:03',
  '08:00:2b:01:02:03:04:05', B'101', B'10', to_tsvector('english', 'row number ' || g), to_tsquery('row & ' || g),
  point(g, -g), line '{{1,2,3}}', lseg '[(0,0),(1,1)]', box '((0,0),(2,2))', path '[(0,0),(1,1),(2,0)]',
  polygon '((0,0),(1,1),(1,0))', circle '<(1,1),5>', int4range(g, g + 10), numrange(g, g + 0.5), tsrange('2021-01-01', '2021-02-01'),
  tstzrange('2021-01-01', '2021-02-01'), daterange('2021-01-01', '2021-02-01'), int8range(g, g * 2 + 1),
  int4multirange(int4range(1, 3), int4range(g + 5, g + 9)), array[g, g + 1], array['a;b', E'c\nd'], 'ok', row(g, 'p')::app.pair, g,
  hstore('k', g::text), 'CaseText' || g, ('top.mid' || g)::ltree, cube(g, g + 1), g, ('0/' || to_hex(g))::pg_lsn, ('name' || g)::name,
  '10:20:10,14,15'::pg_snapshot, array[[g, 1], [2, 3]]
from generate_series(1, 1500) g;

create table app.accounts (id bigint generated always as identity primary key, tenant text not null, name text, balance numeric default 0);
insert into app.accounts (tenant, name, balance) select 't' || (g % 7), 'account ' || g, g * 3 from generate_series(1, 4000) g;

create table app.items (
  id serial primary key, sku text not null, qty int, price numeric, account_id bigint,
  attrs jsonb, tags text[], span tstzrange, total numeric generated always as (qty * price) stored
);
insert into app.items (sku, qty, price, account_id, attrs, tags, span)
select 'sku-' || g, g % 50 - 1, g / 4.0, (g % 4000) + 1, jsonb_build_object('color', case g % 3 when 0 then 'red' else 'blue' end),
       array['t' || (g % 9)], tstzrange(timestamptz '2024-01-01' + g * interval '1 hour', timestamptz '2024-01-01' + (g + 1) * interval '1 hour')
from generate_series(1, 12000) g;
alter table app.items add constraint items_account_fk foreign key (account_id) references app.accounts (id) not valid;
alter table app.items add constraint items_qty_positive check (qty > -5) not valid;
alter table app.items add constraint items_sku_unique unique (sku) deferrable initially deferred;
create index items_attrs_gin on app.items using gin (attrs);
create index items_sku_trgm on app.items using gin (sku gin_trgm_ops);
create index items_span_gist on app.items using gist (span);
create index items_id_brin on app.items using brin (id);
create index items_sku_hash on app.items using hash (sku);
create index items_sku_spgist on app.items using spgist (sku);
create index items_cheap on app.items (price) where price < 10;
create index items_lower_sku on app.items (lower(sku)) include (qty);

create table app.bookings (room int, during tstzrange, exclude using gist (room with =, during with &&));
insert into app.bookings select g % 20, tstzrange(timestamptz '2025-01-01' + g * interval '1 day', timestamptz '2025-01-01' + (g + 1) * interval '1 day') from generate_series(1, 400) g;

create table app.events (id bigint, at date not null, kind text, payload jsonb) partition by range (at);
create table app.events_2025 partition of app.events for values from ('2025-01-01') to ('2026-01-01') partition by list (kind);
create table app.events_2025_a partition of app.events_2025 for values in ('a');
create table app.events_2025_rest partition of app.events_2025 default;
create table app.events_2026 partition of app.events for values from ('2026-01-01') to ('2027-01-01');
create table app.events_default partition of app.events default;
insert into app.events select g, date '2024-12-01' + (g % 800), case g % 3 when 0 then 'a' else 'b' end, jsonb_build_object('n', g) from generate_series(1, 6000) g;
create index on app.events (at);

create table app.base_item (id int, name text);
create table app.special_item (extra text) inherits (app.base_item);
insert into app.base_item values (1, 'base');
insert into app.special_item values (2, 'special', 'extra;');

create unlogged table app.cache (k text primary key, v text);
insert into app.cache select 'k' || g, 'v' || g from generate_series(1, 300) g;

create table app."line
break" ("col
umn" int, "semi;colon" text, "quote""d" text);
insert into app."line
break" values (1, 'a', 'b'), (2, E'x\ny', 'COPY app.items FROM stdin;');

create table "Audit Log"."Entries" (id bigserial primary key, note text);
insert into "Audit Log"."Entries" (note) values ('first'), (E'second\nline'), ('\.');
create rule no_delete as on delete to "Audit Log"."Entries" do instead nothing;

create sequence app.counter start 100;
select setval('app.counter', 4242);
create sequence app.never_called;

create function app.touch() returns trigger language plpgsql as $$ begin new.qty := new.qty; return new; end $$;
create trigger t_enabled before update on app.items for each row execute function app.touch();
create trigger t_disabled before update on app.items for each row execute function app.touch();
alter table app.items disable trigger t_disabled;
create trigger t_replica before update on app.items for each row execute function app.touch();
alter table app.items enable replica trigger t_replica;
create trigger t_always before update on app.items for each row execute function app.touch();
alter table app.items enable always trigger t_always;

create function app.tricky() returns text language plpgsql as $body$
begin
  -- COPY app.items (id) FROM stdin;
  return E'COPY x FROM stdin;\n\\.\n\\restrict abc\n';
end $body$;
create function app.atomic_sum(a int, b int) returns int language sql
begin atomic
  select a + b;
end;
create procedure app.atomic_proc() language sql
begin atomic
  insert into app.cache values ('p', 'q') on conflict do nothing;
  select case when true then 1 else 2 end;
end;
create function app."semi;colon"(x text) returns text language sql immutable as $f$ select x || ';' $f$;

create view app.v_items as select id, sku, qty from app.items;
create rule v_items_ins as on insert to app.v_items do instead insert into app.items (sku, qty) values (new.sku, new.qty);
create materialized view app.mv_counts as select kind, count(*) as n from app.events group by kind;
create unique index on app.mv_counts (kind);
create materialized view app.mv_empty as select 1 as x with no data;
create table app.secret_base (v int);
insert into app.secret_base values (1);
create materialized view app.mv_unreadable as select v from app.secret_base;
alter materialized view app.mv_unreadable owner to {mvo};

alter table app.accounts enable row level security;
alter table app.accounts force row level security;
create policy tenant_rows on app.accounts to {app} using (tenant = current_setting('app.tenant', true));

create publication pub_items for table app.items, app.accounts;

create server remote foreign data wrapper postgres_fdw options (host 'localhost', dbname 'nowhere');
create user mapping for {app} server remote options (user 'remote_user');
create foreign table app.remote_items (id int) server remote;

comment on table app.items is E'items; with a\nnewline -- and $$ quotes';
comment on column app.items.sku is 'stock; keeping unit';
comment on schema "Audit Log" is 'audit;';

alter table app.items owner to {owner};
alter sequence app.counter owner to {owner};
alter schema public owner to {owner};
grant usage on schema app to {reader}, {app};
grant select on all tables in schema app to {reader};
grant select (id, tenant) on app.accounts to {app};
grant insert, update on app.items to {app};
grant usage on sequence app.counter to {app};
grant execute on function app.atomic_sum(int, int) to {reader};
revoke execute on function app.tricky() from public;
alter default privileges in schema app grant select on tables to {reader};
alter default privileges for role {owner} grant select on sequences to {reader};
alter default privileges for role {owner} revoke execute on functions from public;

do $$
declare o oid;
begin
  o := lo_from_bytea(0, 'first large object');
  execute format('alter large object %s owner to {owner}', o);
  execute format('comment on large object %s is %L', o, E'a large; object\ncomment');
  o := lo_from_bytea(0, decode(repeat('ab', 5000), 'hex'));
  execute format('grant select on large object %s to {reader}', o);
  o := lo_from_bytea(0, '');
end $$;

create access method fid_am type table handler heap_tableam_handler;
create table app.on_am (id int) using fid_am;
insert into app.on_am values (1);
create cast (bool as money) with inout;
create function public.begin() returns int language sql as $$ select 1 $$;

create table app.ddl_log (id serial, tag text);
create function app.log_ddl() returns event_trigger language plpgsql as $$
begin
  insert into app.ddl_log (tag) select command_tag from pg_event_trigger_ddl_commands() where schema_name = 'app';
end $$;
create function app.noop_drop() returns event_trigger language plpgsql as $$ begin end $$;
create event trigger log_ddl on ddl_command_end execute function app.log_ddl();
create event trigger noop_drop on sql_drop execute function app.noop_drop();
alter event trigger noop_drop disable;
"#
    )
}

/// What the target holds before a restore: objects of the same names as the
/// source's database-level ones, and others a restore must remove.
fn target_sql(r: &Roles) -> String {
    format!(
        r#"
create extension postgres_fdw;
create table leftover (x int); insert into leftover values (1), (2);
create publication pub_items for table leftover;
create server remote foreign data wrapper postgres_fdw options (host 'elsewhere');
alter default privileges for role {owner} grant insert on tables to {reader};
select lo_from_bytea(0, 'an old large object');
create schema app;
create table app.items (id int primary key, old text);
create cast (bool as money) with inout;
create access method fid_am type table handler heap_tableam_handler;
create extension adminpack;
grant execute on function pg_catalog.pg_read_file(text) to {reader};
revoke usage on language plpgsql from public;
create function et_fn() returns event_trigger language plpgsql as $$ begin raise exception 'the old event trigger fired'; end $$;
create event trigger log_ddl on ddl_command_start execute function et_fn();
"#,
        owner = r.owner,
        reader = r.reader
    )
}

/// `pg_dump -Fc` of `src` restored by `pg_restore ARGS` into `into`: what a
/// restore must give. Whether pg_restore succeeded, and what it said.
fn stock_restore(src: &TestDb, into: &TestDb, args: &[&str]) -> (bool, String) {
    let bins = shipsafe_pg::PgBinaries::find(None, &["pg_dump", "pg_restore"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("src.dump");
    let out = std::process::Command::new(bins.path("pg_dump"))
        .args(["-Fc", "-f"])
        .arg(&file)
        .arg(format!("--dbname={}", src.url().expose()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(bins.path("pg_restore"))
        .args(args)
        .arg(format!("--dbname={}", into.url().expose()))
        .arg(&file)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`stock_restore`] of the fidelity source into a new database.
async fn oracle(src: &TestDb) -> TestDb {
    let db = TestDb::new().await;
    let (_, stderr) = stock_restore(src, &db, &[]);
    // pg_restore reports the view whose owner cannot read its table, and
    // goes on; anything else is a broken test source.
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("error:") && !l.contains("errors ignored"))
        .collect();
    assert!(
        errors.len() == 1 && errors[0].contains("mv_unreadable")
            || errors
                .iter()
                .all(|e| e.contains("permission denied for table secret_base")),
        "pg_restore: {stderr}"
    );
    db
}

async fn loaded(db: &TestDb, sql: &str) {
    db.client().await.batch_execute(sql).await.unwrap();
}

/// Makes `role` a login role that owns `db`, then runs `then` (as the
/// superuser): a target whose owner is not a superuser, as on a provider.
async fn owned_by(db: &TestDb, role: &str, then: &str) {
    loaded(
        db,
        &format!(
            "alter role {role} login; alter database {} owner to {role}; {then}",
            db.name()
        ),
    )
    .await;
}

fn backup(p: &Project, env: &str) -> String {
    let (code, m, err) = p.json(&["backup", "create", env]);
    assert_eq!(code, 0, "{err}");
    m["id"].as_str().unwrap().to_string()
}

const SKIP: &[&str] = &["shipsafe"];

/// `backup restore ID --to ENV` is refused before any change (exit 1) with
/// each of `says` in its message, and `db` is exactly as `before`.
async fn assert_refused(
    p: &Project,
    id: &str,
    env: &str,
    says: &[&str],
    db: &TestDb,
    roles: &Roles,
    before: &Fidelity,
) {
    let (code, run, err) = p.json(&["backup", "restore", id, "--to", env]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(run["error"]["kind"], "problems", "{run}");
    assert!(err.contains("refused before anything was changed"), "{err}");
    for said in says {
        assert!(err.contains(said), "{said}: {err}");
    }
    assert_same(&measure(db, roles).await, before, "after a refused restore");
}

async fn measure(db: &TestDb, roles: &Roles) -> Fidelity {
    fidelity(db.url(), &roles.all(), SKIP).await
}

#[tokio::test]
async fn every_restore_path_gives_what_pg_restore_gives() {
    let src = TestDb::new().await;
    let roles = Roles::new(&src).await;
    loaded(&src, &source_sql(&roles)).await;
    let source = measure(&src, &roles).await;
    let want_db = oracle(&src).await;
    let want = measure(&want_db, &roles).await;
    assert_eq!(want.large_objects.len(), 3, "{:?}", want.large_objects);
    assert_eq!(want.tables.len(), 16, "{:?}", want.tables);

    let copy = TestDb::new().await;
    loaded(&copy, &target_sql(&roles)).await;
    let other = TestDb::new().await;
    loaded(&other, &target_sql(&roles)).await;
    let p = Project::new(
        &[
            ("prod", "guarded", src.url()),
            ("copy", "open", copy.url()),
            ("other", "open", other.url()),
        ],
        "",
    );
    let id = backup(&p, "prod");

    // Into an environment, twice: the second restore replaces what the
    // first brought, publications, event triggers and servers included.
    for round in 1..=2 {
        let (code, run, err) = p.json(&["backup", "restore", &id, "--to", "copy"]);
        assert_eq!(code, 0, "round {round}: {err}");
        assert_eq!(run["outcome"], "restored");
        let proof = &run["report"]["proof"];
        assert_eq!(proof["large_objects"], 3, "{proof}");
        assert_eq!(proof["sequences"], want.sequences.len(), "{proof}");
        assert!(
            proof["warnings"]
                .to_string()
                .contains("app.mv_unreadable was left unpopulated"),
            "{proof}"
        );
        assert_same(
            &measure(&copy, &roles).await,
            &want,
            &format!("restore, round {round}"),
        );
    }

    // clone: TO backed up, then FROM's newest verified (here: fresh) backup.
    let (code, run, err) = p.json(&["clone", "prod", "other"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "cloned");
    assert_same(&measure(&other, &roles).await, &want, "clone");

    // backup verify: the same path into a scratch cluster; what it compared
    // adds up to the stock restore's contents.
    let (code, m, err) = p.json(&["backup", "verify", &id]);
    assert_eq!(code, 0, "{err}");
    let v = &m["verifications"][0];
    assert_eq!(v["ok"], true);
    let proof = &v["proof"];
    // Every row of the source (the restores' event trigger adds one to
    // app.ddl_log afterwards, in pg_restore's restore too).
    let source_rows: i64 = source
        .tables
        .iter()
        .map(|t| t.rsplit(' ').nth(1).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(proof["rows"], source_rows, "{proof}");
    assert_eq!(proof["large_objects"], 3);
    assert_eq!(proof["sequences"], want.sequences.len());
    let not_proven = proof["not_proven"].to_string();
    assert!(not_proven.contains("no [[checks]]"), "{not_proven}");
    assert!(
        proof["warnings"].to_string().contains("mv_unreadable"),
        "{proof}"
    );

    // deploy + rollback by restore: the state before the deploy comes back.
    common::write(
        p.dir.path(),
        "migrations/20260101000000_reshape/up.sql",
        "-- shipsafe:irreversible\nalter table app.items add column note text;\nupdate app.cache set v = 'changed' where k = 'k1';\ndrop publication pub_items;\n",
    );
    let (code, _, err) = p.json(&["deploy", "prod"]);
    assert_eq!(code, 0, "{err}");
    let before_rollback = measure(&src, &roles).await;
    assert_ne!(
        before_rollback.tables, want.tables,
        "the deploy changed prod"
    );
    let (code, run, err) = p.json(&["rollback", "prod", "--confirm", "prod"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "rolled_back", "{run}");
    assert_same(&measure(&src, &roles).await, &want, "deploy + rollback");
}

/// A source with large objects whose restore fails where it is asked to:
/// a foreign key its rows break (loaded with triggers off, as replication
/// does) fails in post-data, after the large objects.
async fn breakable_source(src: &TestDb, roles: &Roles, broken: bool) {
    loaded(src,
        &format!(
            "create table parent (id int primary key);
             create table child (id int primary key, parent_id int references parent);
             insert into parent select generate_series(1, 500);
             insert into child select g, g from generate_series(1, 500) g;
             create sequence s; select setval('s', 77);
             select lo_from_bytea(0, 'one'), lo_from_bytea(0, 'two');
             create publication pub for table parent;
             create table big as select g as id, md5(g::text) as h from generate_series(1, 200000) g;
             alter table big add primary key (id);
             grant select on parent to {};
             {}",
            roles.reader,
            if broken {
                "set session_replication_role = replica; insert into child values (9999, 424242); reset session_replication_role;"
            } else {
                ""
            }
        ),
    )
    .await;
}

#[tokio::test]
async fn a_failed_restore_leaves_the_target_exactly_as_it_was() {
    let src = TestDb::new().await;
    let roles = Roles::new(&src).await;
    breakable_source(&src, &roles, true).await;
    let dst = TestDb::new().await;
    loaded(&dst, &target_sql(&roles)).await;
    let failing_check = r#"
[[checks]]
name = "no child without parent"
sql = "select count(*) from child c where not exists (select 1 from parent p where p.id = c.parent_id)"
expect = "= 0"
"#;
    let p = Project::new(
        &[
            ("prod", "guarded", src.url()),
            ("staging", "open", dst.url()),
        ],
        failing_check,
    );
    let id = backup(&p, "prod");
    let before = measure(&dst, &roles).await;
    assert_eq!(before.large_objects.len(), 1);

    // An error in post-data (the foreign key cannot be validated), after the
    // large objects were written.
    let (code, run, err) = p.json(&["backup", "restore", &id, "--to", "staging"]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(run["error"]["kind"], "rolled_back", "{run}");
    assert!(err.contains("child_parent_id_fkey"), "{err}");
    assert_same(
        &measure(&dst, &roles).await,
        &before,
        "after a post-data error",
    );

    // A failing check on otherwise restorable data.
    let good = TestDb::new().await;
    breakable_source(&good, &roles, false).await;
    let p = Project::new(
        &[
            ("prod", "guarded", good.url()),
            ("staging", "open", dst.url()),
        ],
        &failing_check.replace("= 0", "= 1"),
    );
    let id = backup(&p, "prod");
    let (code, _, err) = p.json(&["backup", "restore", &id, "--to", "staging"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("no child without parent"), "{err}");
    assert_same(
        &measure(&dst, &roles).await,
        &before,
        "after a failing check",
    );
    let (code, _, err) = p.json(&["clone", "prod", "staging"]);
    assert_eq!(code, 4, "{err}");
    assert_same(
        &measure(&dst, &roles).await,
        &before,
        "after a clone's failing check",
    );

    // kill -9 in the middle: once the restore holds the target's old table
    // (it has dropped it inside its transaction), the process dies.
    let mut child = p.spawn(&["backup", "restore", &id, "--to", "staging"]);
    let c = dst.client().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let pid = loop {
        let holder: Option<i32> = c
            .query_opt(
                "select l.pid from pg_locks l where l.relation = 'leftover'::regclass \
                 and l.mode = 'AccessExclusiveLock' and l.granted and l.pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .map(|r| r.get(0));
        if let Some(pid) = holder {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restore never started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore ended before the kill"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    // The server notices the dead client and rolls its transaction back.
    loop {
        let alive: bool = c
            .query_one(
                "select exists (select 1 from pg_stat_activity where pid = $1)",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if !alive {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the killed restore's session stayed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(c);
    assert_same(&measure(&dst, &roles).await, &before, "after kill -9");
}

/// `url` with another user (the test server trusts local connections).
fn as_user(url: &DbUrl, user: &str) -> DbUrl {
    let s = url.expose();
    let (scheme, rest) = s.split_once("://").unwrap();
    let host = rest.split_once('@').map_or(rest, |(_, h)| h);
    DbUrl::new(format!("{scheme}://{user}@{host}"))
}

/// What the target holds outside its schemas and the restoring role may not
/// replace, and what the backup holds that only a superuser may create, are
/// refused before the first change, each with its reason.
#[tokio::test]
async fn a_restore_refuses_what_it_cannot_replace_before_changing_anything() {
    let src = TestDb::new().await;
    let roles = Roles::new(&src).await;
    loaded(
        &src,
        "create table t (id int primary key); insert into t values (1);
         create function noop() returns event_trigger language plpgsql as $$ begin end $$;
         create event trigger audit_ddl on ddl_command_end execute function noop();",
    )
    .await;
    let dst = TestDb::new().await;
    let c = dst.client().await;
    c.batch_execute(&format!(
        "alter role {o} login;
         alter database {db} owner to {o};
         create table mine (x int); alter table mine owner to {o}; insert into mine values (7);
         create publication theirs for table mine;",
        o = roles.owner,
        db = dst.name()
    ))
    .await
    .unwrap();
    let owner_url = as_user(dst.url(), &roles.owner);
    let p = Project::new(
        &[
            ("prod", "guarded", src.url()),
            ("staging", "open", &owner_url),
        ],
        "",
    );
    let id = backup(&p, "prod");
    let before = measure(&dst, &roles).await;
    assert_refused(
        &p,
        &id,
        "staging",
        &[
            "event trigger audit_ddl, which only a superuser can create",
            "publication theirs must be replaced",
        ],
        &dst,
        &roles,
        &before,
    )
    .await;
    let (_, log, _) = p.json(&["log", "--limit", "1"]);
    assert_eq!(
        log["entries"][0]["outcome"], "failed_nothing_changed",
        "{log}"
    );
    let anchored: bool = c
        .query_one("select to_regnamespace('shipsafe') is not null", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!anchored, "a refused restore wrote into the target");
}

/// A dump does not carry the database's own settings, comment and
/// privileges. A restore names the ones that differ, and never their
/// values: a setting may hold a secret.
#[tokio::test]
async fn database_level_properties_are_named_never_copied() {
    let src = TestDb::new().await;
    let roles = Roles::new(&src).await;
    let secret = "sup3r-s3cret-value-4711";
    src.client()
        .await
        .batch_execute(&format!(
            "create table t (id int); insert into t values (1);
             alter database {db} set search_path = public, pg_catalog;
             alter database {db} set app.jwt_secret = '{secret}';
             comment on database {db} is 'the production database';
             grant connect on database {db} to {r};
             alter role {r} in database {db} set work_mem = '8MB';",
            db = src.name(),
            r = roles.reader,
        ))
        .await
        .unwrap();
    let dst = TestDb::new().await;
    let p = Project::new(
        &[("prod", "guarded", src.url()), ("copy", "open", dst.url())],
        "",
    );
    let (code, m, err) = p.json(&["backup", "create", "prod"]);
    assert_eq!(code, 0, "{err}");
    let names: Vec<String> = m["database_level"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{} {} {}", p["kind"], p["role"], p["name"]))
        .collect();
    assert_eq!(names.len(), 5, "{names:?}");
    let id = m["id"].as_str().unwrap().to_string();
    let (code, run, err) = p.json(&["backup", "restore", &id, "--to", "copy"]);
    assert_eq!(code, 0, "{err}");
    let warnings = run["report"]["proof"]["warnings"].to_string();
    for said in [
        "setting search_path",
        "setting app.jwt_secret",
        &format!("setting work_mem for role {}", roles.reader),
        "comment",
        &format!("CONNECT granted to {}", roles.reader),
    ] {
        assert!(warnings.contains(said), "{said}: {warnings}");
    }
    let (code, v, err) = p.json(&["backup", "verify", &id]);
    assert_eq!(code, 0, "{err}");
    let not_proven = v["verifications"][0]["proof"]["not_proven"].to_string();
    assert!(
        not_proven.contains("the database's own properties"),
        "{not_proven}"
    );
    // The value is nowhere: not in output, manifests, the audit log or runs.
    let out = format!("{m}{run}{v}{err}");
    assert!(!out.contains(secret), "{out}");
    for entry in walk(p.dir.path()) {
        if let Ok(text) = std::fs::read(&entry)
            && !entry.to_string_lossy().ends_with(".zst")
        {
            let text = String::from_utf8_lossy(&text);
            assert!(
                !text.contains(secret),
                "{} holds the value",
                entry.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Schemas left out of backups (`[backups] exclude_schemas`, e.g. a
/// provider's) are not in the archive: a restore keeps the target's.
#[tokio::test]
async fn schemas_left_out_of_the_backup_are_kept_by_a_restore() {
    let src = TestDb::new().await;
    loaded(
        &src,
        "create schema provider_a; create table provider_a.x (v int);
         create table t (id int); insert into t values (1), (2);",
    )
    .await;
    let dst = TestDb::new().await;
    loaded(&dst,
        "create schema provider_b; create table provider_b.state (v text); insert into provider_b.state values ('kept');
         create table t (id int); insert into t values (9);",
    )
    .await;
    let p = Project::new(
        &[("prod", "guarded", src.url()), ("copy", "open", dst.url())],
        "[backups]\nexclude_schemas = [\"Provider_*\"]\n",
    );
    let id = backup(&p, "prod");
    let (code, run, err) = p.json(&["backup", "restore", &id, "--to", "copy"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "restored");
    let c = dst.client().await;
    let kept: String = c
        .query_one("select v from provider_b.state", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, "kept");
    let rows: i64 = c
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 2, "the backup's own table was restored");
    // A schema the target had that is neither excluded nor in the backup
    // goes, and the report names it.
    c.batch_execute("create schema reporting; create table reporting.daily (d date);")
        .await
        .unwrap();
    let (code, run, err) = p.json(&["backup", "restore", &id, "--to", "copy"]);
    assert_eq!(code, 0, "{err}");
    let warnings = run["report"]["proof"]["warnings"].to_string();
    assert!(
        warnings
            .contains("schema reporting (1 table(s)) was in the target but is not in the backup"),
        "{warnings}"
    );
    assert!(!warnings.contains("provider_b"), "{warnings}");
}

/// A restore takes the environment's lock as a deploy does: while another
/// operation holds it, a restore or clone is blocked (exit 3) and changes
/// nothing.
#[tokio::test]
async fn a_restore_or_clone_is_blocked_while_the_environment_is_locked() {
    let src = TestDb::new().await;
    let roles = Roles::new(&src).await;
    loaded(&src, "create table t (id int); insert into t values (1);").await;
    let dst = TestDb::new().await;
    loaded(
        &dst,
        "create table old (x int); insert into old values (1);",
    )
    .await;
    let p = Project::new(
        &[("prod", "guarded", src.url()), ("copy", "open", dst.url())],
        "",
    );
    let id = backup(&p, "prod");
    let holder = common::hold_migration_lock(dst.url()).await;
    let before = measure(&dst, &roles).await;
    for args in [
        vec!["backup", "restore", id.as_str(), "--to", "copy"],
        vec!["clone", "prod", "copy"],
    ] {
        let (code, v, err) = p.json(&args);
        assert_eq!(code, 3, "{args:?}: {err}");
        assert!(
            v["error"]["kind"] == "blocked" || v["outcome"] == "blocked",
            "{v}"
        );
        assert!(err.contains("pid"), "names the holder: {err}");
    }
    assert_same(&measure(&dst, &roles).await, &before, "while locked");
    holder
        .execute(
            "select pg_advisory_unlock($1)",
            &[&shipsafe_migrate::history::LOCK_KEY],
        )
        .await
        .unwrap();
    let (code, _, err) = p.json(&["backup", "restore", &id, "--to", "copy"]);
    assert_eq!(code, 0, "{err}");
}

/// A role that is not a superuser can give objects only to roles it is a
/// member of, and only when they may create in the object's schema at that
/// moment; what it could not do is refused before the first change.
#[tokio::test]
async fn ownership_a_non_superuser_cannot_give_is_refused_up_front() {
    let src = TestDb::new().await;
    let roles = Roles::new(&src).await;
    let (o, app) = (&roles.owner, &roles.app);
    src.client()
        .await
        .batch_execute(&format!(
            "alter database {db} owner to {o};
             create table mine (id int); alter table mine owner to {o};
             create table theirs (id int); alter table theirs owner to {app};",
            db = src.name()
        ))
        .await
        .unwrap();
    let dst = TestDb::new().await;
    owned_by(
        &dst,
        o,
        &format!(
            "set role {o}; create table keep (x int); insert into keep values (1); reset role;"
        ),
    )
    .await;
    let p = Project::new(
        &[
            ("prod", "guarded", src.url()),
            ("copy", "open", &as_user(dst.url(), o)),
        ],
        "",
    );
    let id = backup(&p, "prod");
    let before = measure(&dst, &roles).await;
    assert_refused(
        &p,
        &id,
        "copy",
        &[
            &format!("the backup's objects belong to {app}"),
            &format!("GRANT \"{app}\" TO \"{o}\""),
        ],
        &dst,
        &roles,
        &before,
    )
    .await;
    // A member now, but app may not create in public (the database's owner's).
    dst.client()
        .await
        .batch_execute(&format!("grant {app} to {o}"))
        .await
        .unwrap();
    assert_refused(
        &p,
        &id,
        "copy",
        &[&format!(
            "role {app} owns objects in schema public, which belongs to {o} here"
        )],
        &dst,
        &roles,
        &before,
    )
    .await;
}

/// The safety backup failing is said as what it is, not as a broken backup.
#[tokio::test]
async fn a_failed_safety_backup_says_so_and_restores_nothing() {
    let src = TestDb::new().await;
    let roles = Roles::new(&src).await;
    loaded(&src, "create table t (id int);").await;
    let dst = TestDb::new().await;
    let o = &roles.owner;
    owned_by(&dst, o, "select lo_from_bytea(0, 'the superuser''s');").await;
    let p = Project::new(
        &[
            ("prod", "guarded", src.url()),
            ("staging", "guarded", &as_user(dst.url(), o)),
        ],
        "",
    );
    let id = backup(&p, "prod");
    let (code, _, err) = p.json(&["backup", "restore", &id, "--to", "staging"]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(
            "the safety backup of staging, taken before restoring, failed, so nothing was restored"
        ),
        "{err}"
    );
}

/// A restore drill's time is the restore's: checks run after it is taken.
#[tokio::test]
async fn verify_times_the_restore_not_the_checks() {
    let src = TestDb::new().await;
    loaded(&src, "create table t (id int); insert into t values (1);").await;
    let p = Project::new(
        &[("prod", "guarded", src.url())],
        "[[checks]]\nname = \"slow\"\nsql = \"select count(*) from t, pg_sleep(4)\"\nexpect = \"= 1\"\n",
    );
    let id = backup(&p, "prod");
    let (code, m, err) = p.json(&["backup", "verify", &id]);
    assert_eq!(code, 0, "{err}");
    let secs = m["verifications"][0]["restore_seconds"].as_f64().unwrap();
    assert!(secs < 4.0, "restore_seconds {secs} includes the 4 s check");
}

/// Managed providers give no superuser: a database owner restores a backup
/// of objects it owns, publications and large objects included, twice.
#[tokio::test]
async fn a_database_owner_without_superuser_restores_its_own_backup() {
    let src = TestDb::new().await;
    let roles = Roles::new(&src).await;
    let o = &roles.owner;
    src.client()
        .await
        .batch_execute(&format!(
            "alter role {o} login;
             alter database {db} owner to {o};
             set role {o};
             create schema app;
             create table app.t (id int primary key, v text);
             insert into app.t select g, 'v' || g from generate_series(1, 300) g;
             create materialized view app.mv as select count(*) from app.t;
             create publication pub for table app.t;
             select lo_from_bytea(0, 'owned');
             grant select on app.t to {r};
             alter default privileges grant select on tables to {r};
             reset role;",
            db = src.name(),
            r = roles.reader
        ))
        .await
        .unwrap();
    let want_db = oracle_quiet(&src, o).await;
    let want = measure(&want_db, &roles).await;
    let dst = TestDb::new().await;
    dst.client()
        .await
        .batch_execute(&format!(
            "alter database {db} owner to {o};
             set role {o};
             create table stale (x int);
             create publication pub for table stale;
             select lo_from_bytea(0, 'stale');
             reset role;",
            db = dst.name()
        ))
        .await
        .unwrap();
    let p = Project::new(
        &[
            ("prod", "guarded", &as_user(src.url(), o)),
            ("staging", "open", &as_user(dst.url(), o)),
        ],
        "",
    );
    let id = backup(&p, "prod");
    for round in 1..=2 {
        let (code, run, err) = p.json(&["backup", "restore", &id, "--to", "staging"]);
        assert_eq!(code, 0, "round {round}: {err}");
        assert_eq!(run["report"]["proof"]["rows"], 300, "{run}");
        assert_same(
            &measure(&dst, &roles).await,
            &want,
            &format!("round {round}"),
        );
    }
    // What only a superuser may put back is left, and said.
    dst.client()
        .await
        .batch_execute(&format!(
            "grant execute on function pg_catalog.pg_read_file(text) to {}",
            roles.reader
        ))
        .await
        .unwrap();
    let (code, run, err) = p.json(&["backup", "restore", &id, "--to", "staging"]);
    assert_eq!(code, 0, "{err}");
    let warnings = run["report"]["proof"]["warnings"].to_string();
    assert!(
        warnings.contains("only a superuser may change them")
            && warnings.contains("pg_read_file(text) granted to"),
        "{warnings}"
    );
}

/// [`oracle`] for a source whose restore has no expected errors, into a
/// database owned by `owner` (as the target is: `public`'s privileges follow
/// the database's owner).
async fn oracle_quiet(src: &TestDb, owner: &str) -> TestDb {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(&format!("alter database {} owner to {owner}", db.name()))
        .await
        .unwrap();
    let (ok, stderr) = stock_restore(src, &db, &["--exit-on-error", "--single-transaction"]);
    assert!(ok, "{stderr}");
    db
}

/// A rollback by restore that fails (here in post-data) changes nothing:
/// the database stays as the failed deploy left it, and the message says
/// exactly that; `backup verify` finds the same backup unrestorable.
#[tokio::test]
async fn a_rollback_whose_restore_fails_leaves_the_deployed_state_and_says_so() {
    let src = TestDb::new().await;
    let roles = Roles::new(&src).await;
    breakable_source(&src, &roles, true).await;
    let p = Project::new(&[("prod", "guarded", src.url())], "");
    common::write(
        p.dir.path(),
        "migrations/20260101000000_note/up.sql",
        "-- shipsafe:irreversible\nalter table parent add column note text;\n",
    );
    let (code, deploy, err) = p.json(&["deploy", "prod"]);
    assert_eq!(code, 0, "{err}");
    let pre_deploy = deploy["backup_id"].as_str().unwrap().to_string();
    let deployed = measure(&src, &roles).await;
    let (code, run, err) = p.json(&["rollback", "prod", "--confirm", "prod"]);
    assert_eq!(code, 5, "{err}");
    assert_eq!(run["error"]["kind"], "rollback_failed", "{run}");
    assert!(
        err.contains("child_parent_id_fkey") && err.contains("as it was before this restore"),
        "{err}"
    );
    assert_same(
        &measure(&src, &roles).await,
        &deployed,
        "after a failed rollback",
    );
    let (code, v, err) = p.json(&["backup", "verify", &pre_deploy]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(v["error"]["kind"], "problems", "{v}");
    let (_, list, _) = p.json(&["backup", "list"]);
    let m = list
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == pre_deploy.as_str())
        .unwrap();
    assert_eq!(m["verifications"][0]["ok"], false, "{m}");
}

/// A subscription is replaced by a restore when nothing outside the
/// transaction depends on it, and refused (with how to detach it) while it
/// names a replication slot: dropping it would drop the slot on the
/// publisher, which no rollback brings back.
#[tokio::test]
async fn subscriptions_are_replaced_or_refused_before_any_change() {
    let src = TestDb::new().await;
    let roles = Roles::new(&src).await;
    loaded(
        &src,
        "create table t (id int); insert into t values (1);
         create subscription from_src connection 'host=127.0.0.1 dbname=nowhere' publication p
           with (connect = false, slot_name = none);",
    )
    .await;
    let dst = TestDb::new().await;
    loaded(
        &dst,
        "create table old (x int);
         create subscription slotted connection 'host=127.0.0.1 dbname=nowhere' publication p
           with (connect = false);",
    )
    .await;
    let p = Project::new(
        &[("prod", "guarded", src.url()), ("copy", "open", dst.url())],
        "",
    );
    let id = backup(&p, "prod");
    let before = measure(&dst, &roles).await;
    assert_refused(
        &p,
        &id,
        "copy",
        &[
            "subscription slotted names the replication slot slotted",
            "SET (slot_name = NONE)",
        ],
        &dst,
        &roles,
        &before,
    )
    .await;
    dst.client()
        .await
        .batch_execute("alter subscription slotted set (slot_name = none)")
        .await
        .unwrap();
    let (code, _, err) = p.json(&["backup", "restore", &id, "--to", "copy"]);
    assert_eq!(code, 0, "{err}");
    let subs: Vec<String> = dst
        .client()
        .await
        .query(
            "select subname::text from pg_subscription where subdbid = (select oid from pg_database where datname = current_database())",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(subs, vec!["from_src"]);
}

/// The target's own settings never change how the backup is read or what
/// shipsafe's statements call: a target reading strings the old way
/// (`standard_conforming_strings = off`) and arrays without NULLs
/// (`array_nulls = off`), whose owner put a kept schema before `pg_catalog`
/// in its `search_path` with look-alikes of the functions shipsafe, its
/// masking and a check call, each waiting for a superuser to run it.
#[tokio::test]
async fn the_target_s_settings_change_neither_the_backup_nor_shipsafe() {
    let src = TestDb::new().await;
    let roles = Roles::new(&src).await;
    let evil = &roles.app;
    let keep = format!(
        "create schema keep authorization {evil}; create table keep.kept (n int); insert into keep.kept values (1);"
    );
    loaded(
        &src,
        &format!(
            r#"{keep}
               create table t (id int primary key, v text default 'C:	emp', tags text[] default '{{x,NULL}}');
               insert into t values (1, '42', '{{a,NULL,b}}'), (2, 'x', '{{NULL}}');
               comment on table t is $c$x'; COMMIT; SELECT 1/0; --$c$;
               create view digits as select id from t where v ~ '^\d+$';"#
        ),
    )
    .await;
    let want_db = oracle_quiet(&src, evil).await;
    // The kept schema is the target's own, look-alikes and all.
    let skip = ["shipsafe", "keep"];
    let want = fidelity(want_db.url(), &roles.all(), &skip).await;
    let dst = TestDb::new().await;
    // Each look-alike makes its owner a superuser when a superuser runs it.
    let trap = |signature: &str, returns: &str, original: &str| {
        format!(
            "create function keep.{signature} returns {returns} language plpgsql as $$
             begin
               if current_setting('is_superuser') = 'on' then execute 'alter role {evil} superuser'; end if;
               return {original};
             end $$;"
        )
    };
    dst.client()
        .await
        .batch_execute(&format!(
            "create table precious (id int); insert into precious values (1);
             alter role {evil} login; alter database {db} owner to {evil};
             alter database {db} set standard_conforming_strings = off;
             alter database {db} set array_nulls = off;
             alter database {db} set search_path = keep, public, pg_catalog;
             {keep}
             set role {evil};
             {} {} {} {} {} {}
             reset role;",
            trap(
                "pg_has_role(oid, text)",
                "boolean",
                "pg_catalog.pg_has_role($1, $2)"
            ),
            trap("txid_current_if_assigned()", "bigint", "0::bigint"),
            trap("pg_backend_pid()", "int", "pg_catalog.pg_backend_pid()"),
            trap(
                "pg_try_advisory_lock(bigint)",
                "boolean",
                "pg_catalog.pg_try_advisory_lock($1)"
            ),
            trap("md5(text)", "text", "pg_catalog.md5($1)"),
            trap("lower(text)", "text", "pg_catalog.lower($1)"),
            db = dst.name()
        ))
        .await
        .unwrap();
    let mut p = Project::new(
        &[("prod", "guarded", src.url()), ("copy", "open", dst.url())],
        "[backups]\nexclude_schemas = [\"keep\"]\n[mask]\n\"t.v\" = \"text\"\n\
         [[checks]]\nname = \"calls lower\"\nsql = \"select count(*) from t where lower(v) = lower(v)\"\nexpect = \">= 0\"\n",
    );
    p.vars
        .push(("SHIPSAFE_MASK_KEY".into(), "0123456789abcdef0123".into()));
    let id = backup(&p, "prod");
    let superuser = || async {
        dst.client()
            .await
            .query_one("select rolsuper from pg_roles where rolname = $1", &[evil])
            .await
            .unwrap()
            .get::<_, bool>(0)
    };
    let (code, _, err) = p.json(&["backup", "restore", &id, "--to", "copy"]);
    assert_eq!(code, 0, "{err}");
    assert_same(
        &fidelity(dst.url(), &roles.all(), &skip).await,
        &want,
        "into a hostile target",
    );
    assert!(
        !superuser().await,
        "a look-alike ran as the superuser (restore)"
    );
    let c = dst.client().await;
    let row = c
        .query_one(
            "select (select count(*) from public.digits), tags[2] is null from public.t where id = 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        1,
        "the view's regular expression as written"
    );
    assert!(row.get::<_, bool>(1), "NULL in an array stays NULL");
    let (code, _, err) = p.json(&["clone", "prod", "copy", "--mask"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !superuser().await,
        "a look-alike ran as the superuser (clone --mask)"
    );
    let masked: String = c
        .query_one("select v from public.t where id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert!(masked.starts_with("masked "), "{masked}");
}

/// A database in LATIN1 whose own setting reads strings the old way
/// (`standard_conforming_strings = off`): its backup restores exactly, names
/// with non-ASCII letters and backslashes in definitions included.
#[tokio::test]
async fn a_latin1_source_reading_strings_the_old_way_restores_exactly() {
    let roles_db = TestDb::new().await;
    let roles = Roles::new(&roles_db).await;
    let (src, dst, want_db) = (
        TestDb::new().await,
        TestDb::new().await,
        TestDb::new().await,
    );
    let admin = shipsafe_pg::connect(&shipsafe_testkit::with_database(src.url(), "postgres"))
        .await
        .unwrap();
    for db in [&src, &dst, &want_db] {
        admin
            .batch_execute(&format!("drop database {}", db.name()))
            .await
            .unwrap();
        admin
            .batch_execute(&format!(
                "create database {} encoding 'LATIN1' lc_collate 'C' lc_ctype 'C' template template0",
                db.name()
            ))
            .await
            .unwrap();
    }
    admin
        .batch_execute(&format!(
            "alter database {} set standard_conforming_strings = off",
            src.name()
        ))
        .await
        .unwrap();
    loaded(
        &src,
        r#"create table "café" (id int, v text default 'C:\\dir\\file');
           insert into "café" values (1, 'Ã©tÃ©'), (2, 'naïve');
           comment on table "café" is 'back\\slash';
           create view v as select 'x\\y'::text as lit, 'é'::text as e;"#,
    )
    .await;
    // What stock tools give, into a LATIN1 database like the source's.
    let (ok, stderr) = stock_restore(&src, &want_db, &["--exit-on-error", "--single-transaction"]);
    assert!(ok, "{stderr}");
    let want = measure(&want_db, &roles).await;
    let p = Project::new(
        &[("prod", "guarded", src.url()), ("copy", "open", dst.url())],
        "",
    );
    let id = backup(&p, "prod");
    let (code, _, err) = p.json(&["backup", "restore", &id, "--to", "copy"]);
    assert_eq!(code, 0, "{err}");
    assert_same(&measure(&dst, &roles).await, &want, "a LATIN1 database");
    let (code, _, err) = p.json(&["backup", "verify", &id]);
    assert_eq!(code, 0, "{err}");
}

/// Kept schemas: what in them depends on what a restore drops is refused
/// by name; patterns are read as pg_dump reads them (ASCII letters fold,
/// `public` itself may be kept); and the restore's lock timeout holds while
/// the archive waits for a lock on a kept table.
#[tokio::test]
async fn kept_schemas_are_kept_whole_or_the_restore_is_refused() {
    let src = TestDb::new().await;
    let roles = Roles::new(&src).await;
    let shared = "create schema keep; create table keep.ref (x int primary key); insert into keep.ref values (1);
                  create schema \"Ärger\"; create table \"Ärger\".notes (n text); insert into \"Ärger\".notes values ('kept');";
    loaded(
        &src,
        &format!(
            "{shared}
             create type mood as enum ('ok', 'sad');
             create table t (id int primary key references keep.ref (x)); insert into t values (1);"
        ),
    )
    .await;
    let dst = TestDb::new().await;
    loaded(
        &dst,
        &format!(
            "{shared}
             create type mood as enum ('ok', 'sad');
             create table t (id int primary key);
             create table keep.people (id int, m public.mood);
             create view keep.v as select id from public.t;"
        ),
    )
    .await;
    let p = Project::new(
        &[("prod", "guarded", src.url()), ("copy", "open", dst.url())],
        "[backups]\nexclude_schemas = [\"keep\", \"Ärger\", \"[[:alpha:]]+_arch\"]\n[migrations]\nlock_timeout = \"1s\"\n",
    );
    let id = backup(&p, "prod");
    // Through an extension the restore drops (it lives in pg_catalog): its
    // types, and what says it depends on it.
    dst.client()
        .await
        .batch_execute(
            "create extension cube schema pg_catalog;
             create table keep.pts (c cube);
             create function keep.f() returns int language sql as 'select 1';
             alter function keep.f() depends on extension cube;
             create schema \"größe_arch\"; create table \"größe_arch\".old (x int); insert into \"größe_arch\".old values (1);",
        )
        .await
        .unwrap();
    let before = measure(&dst, &roles).await;
    assert_refused(
        &p,
        &id,
        "copy",
        &[
            "column c of table keep.pts needs type cube",
            "function keep.f()",
        ],
        &dst,
        &roles,
        &before,
    )
    .await;
    dst.client()
        .await
        .batch_execute("drop table keep.pts; drop function keep.f(); drop extension cube;")
        .await
        .unwrap();
    let before = measure(&dst, &roles).await;
    assert_refused(
        &p,
        &id,
        "copy",
        &[
            "column m of table keep.people needs type public.mood",
            "view keep.v",
        ],
        &dst,
        &roles,
        &before,
    )
    .await;
    dst.client()
        .await
        .batch_execute("drop table keep.people; drop view keep.v;")
        .await
        .unwrap();

    // A session holding the kept table the backup's foreign key needs: the
    // restore gives up after its lock timeout instead of waiting, with
    // every restored table locked, for as long as that session lasts.
    let mut holder = dst.client().await;
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute("lock table keep.ref in access exclusive mode")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (code, _, err) = p.json(&["backup", "restore", &id, "--to", "copy"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("lock timeout"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    tx.rollback().await.unwrap();

    let (code, _, err) = p.json(&["backup", "restore", &id, "--to", "copy"]);
    assert_eq!(code, 0, "{err}");
    let kept: (String, i64) = dst
        .client()
        .await
        .query_one(
            "select (select n from \"Ärger\".notes), (select count(*) from \"größe_arch\".old)",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(kept, ("kept".to_string(), 1), "matched as pg_dump matches");

    // `public` itself excluded: kept, not made anew.
    let p = Project::new(
        &[("prod", "guarded", src.url()), ("copy", "open", dst.url())],
        "[backups]\nexclude_schemas = [\"public\", \"keep\"]\n",
    );
    let id = backup(&p, "prod");
    let (code, _, err) = p.json(&["backup", "restore", &id, "--to", "copy"]);
    assert_eq!(code, 0, "{err}");
}

/// A role that is not a superuser cannot create an untrusted extension or
/// replay privileges granted down a chain (pg_dump replays them as the
/// granting role): refused before any change.
#[tokio::test]
async fn what_only_a_superuser_may_replay_is_refused_to_others_up_front() {
    let src = TestDb::new().await;
    let roles = Roles::new(&src).await;
    let (o, b, c) = (&roles.owner, &roles.reader, &roles.app);
    src.client()
        .await
        .batch_execute(&format!(
            "alter database {db} owner to {o};
             create extension dblink;
             create table t (id int); alter table t owner to {o};
             set role {o}; grant select on t to {b} with grant option; reset role;
             set role {b}; grant select on t to {c}; reset role;",
            db = src.name()
        ))
        .await
        .unwrap();
    let dst = TestDb::new().await;
    owned_by(&dst, o, &format!("grant {b}, {c} to {o};")).await;
    let p = Project::new(
        &[
            ("prod", "guarded", src.url()),
            ("copy", "open", &as_user(dst.url(), o)),
        ],
        "",
    );
    let id = backup(&p, "prod");
    let before = measure(&dst, &roles).await;
    assert_refused(
        &p,
        &id,
        "copy",
        &[
            "creates the extension(s) dblink, which only a superuser can create",
            "SET SESSION AUTHORIZATION",
        ],
        &dst,
        &roles,
        &before,
    )
    .await;
}

/// A restore that cannot take its locks (the app holds a table) stops
/// after `lock_timeout` with nothing changed, and names the sessions in
/// the way: pid, application, state, since.
#[tokio::test]
async fn a_restore_blocked_by_the_app_names_the_sessions_in_its_way() {
    let db = TestDb::new().await;
    loaded(
        &db,
        "create table orders (id int primary key); insert into orders values (1);",
    )
    .await;
    let p = Project::new(
        &[("staging", "guarded", db.url())],
        "[migrations]\nlock_timeout = \"300ms\"\n",
    );
    let id = backup(&p, "staging");
    let app = db.client().await;
    app.batch_execute(
        "set application_name = 'monthly-report'; begin; select count(*) from orders",
    )
    .await
    .unwrap();
    let out = p
        .cmd()
        .args(["backup", "restore", &id, "--to", "staging"])
        .output()
        .unwrap();
    let err = common::stderr(&out);
    assert_eq!(common::code(&out), 4, "{err}");
    assert!(err.contains("monthly-report"), "{err}");
    assert!(err.contains("idle in transaction"), "{err}");
    assert!(err.contains("pg_terminate_backend"), "{err}");
    app.batch_execute("commit").await.unwrap();
}
