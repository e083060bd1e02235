//! Reference data keeps every value and sees every edit: values a hash
//! takes for one another (NULL and 0, NULL and NaN), and bases written by
//! earlier versions of the hash.
#![allow(clippy::unwrap_used)]

mod common;

use common::Project;
use shipsafe_testkit::TestDb;

const SET: &str = r#"
[data.t]
table = "t"
key = ["k"]
columns = ["k", "f", "n"]
"#;

const TABLE: &str =
    "create table t (id serial primary key, k text not null unique, f float8, n numeric);";

/// A project with `source` as `local` and `target` as `staging` (both
/// open) and `sets`, the sets exported from `local`.
fn exported(source: &TestDb, target: &TestDb, sets: &str) -> Project {
    let p = Project::new(
        &[
            ("local", "open", source.url()),
            ("staging", "open", target.url()),
        ],
        sets,
    );
    let (code, _, err) = p.json(&["data", "export", "--all", "--env", "local"]);
    assert_eq!(code, 0, "{err}");
    p
}

/// A source with `rows` (`(k, f, n)` SQL tuples), a target, and the set
/// exported from the source and imported into the target once.
async fn imported(rows: &str) -> (TestDb, TestDb, Project) {
    let source = TestDb::new().await;
    let target = TestDb::new().await;
    source
        .client()
        .await
        .batch_execute(&format!("{TABLE} insert into t (k, f, n) values {rows};"))
        .await
        .unwrap();
    target.client().await.batch_execute(TABLE).await.unwrap();
    let p = exported(&source, &target, SET);
    let (code, _, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 0, "{err}");
    (source, target, p)
}

/// The conflicts of the one set, from an import's run or a diff.
fn conflicts(run: &serde_json::Value) -> Vec<serde_json::Value> {
    let sets = if run["report"].is_object() {
        &run["report"]["sets"]
    } else {
        &run["sets"]
    };
    sets[0]["conflicts"].as_array().cloned().unwrap_or_default()
}

fn edit_file(p: &Project, edit: impl Fn(&mut Vec<serde_json::Value>)) {
    let path = p.dir.path().join("data/t.json");
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(file["rows"].as_array_mut().unwrap());
    std::fs::write(&path, serde_json::to_string_pretty(&file).unwrap()).unwrap();
}

async fn row(db: &TestDb, k: &str) -> (Option<f64>, Option<String>) {
    let r = db
        .client()
        .await
        .query_one("select f, n::text from t where k = $1", &[&k])
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// An edit in the target from 0 / NaN to NULL is seen (`diff` and
/// `import` report it as a conflict) and never written over, though
/// `hash_record_extended` hashes NULL like float 0 and numeric NaN.
#[tokio::test]
async fn an_edit_from_zero_or_nan_to_null_is_a_conflict_not_overwritten() {
    let (_source, target, p) = imported("('a', 0, 'NaN'), ('b', 1, 2)").await;
    target
        .client()
        .await
        .batch_execute("update t set f = null, n = null where k = 'a'")
        .await
        .unwrap();
    // The file unchanged: the edit is still a difference to report.
    let (code, run, err) = p.json(&["data", "diff", "--all", "--env", "staging"]);
    assert_eq!(code, 1, "{err}\n{run}");
    assert_eq!(conflicts(&run).len(), 1, "{run}");
    // Another change to the file: the edit is a conflict, not overwritten.
    edit_file(&p, |rows| {
        let b = rows.iter_mut().find(|r| r["k"] == "b").unwrap();
        b["n"] = serde_json::json!(3);
    });
    let (code, run, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 1, "{err}\n{run}");
    let c = conflicts(&run);
    assert_eq!(c.len(), 1, "{run}");
    assert_eq!(c[0]["kind"], "changed_in_target", "{run}");
    assert_eq!(row(&target, "a").await, (None, None), "the edit is kept");
    // And the other way: NULL in the target edited to 0.
    let (_source, target, p) = imported("('a', null, null)").await;
    target
        .client()
        .await
        .batch_execute("update t set f = 0, n = 'NaN' where k = 'a'")
        .await
        .unwrap();
    let (code, run, err) = p.json(&["data", "diff", "--all", "--env", "staging"]);
    assert_eq!(code, 1, "{err}\n{run}");
    assert_eq!(conflicts(&run).len(), 1, "{run}");
}

/// A base written by the earlier hash (NULL hashed like 0) is converted
/// on its next use: a row holding NULL that the file changes is an update,
/// not a false conflict, and a row the old hash cannot tell apart (the
/// target edited 0 to NULL since) is a conflict, not overwritten.
#[tokio::test]
async fn a_base_from_the_earlier_hash_is_converted_without_false_conflicts() {
    let (_source, target, p) = imported("('a', 0, 'NaN'), ('b', 1, 2), ('c', null, 5)").await;
    let db = target.client().await;
    // The base as the earlier hash wrote it: the set's columns in order,
    // NULL hashed as the fields' own hash of nothing.
    db.batch_execute(
        "update shipsafe.data_base d set hash_version = 1, rh = ( \
           select array_agg(hash_record_extended(row(t.k, t.f, t.n), 0) order by u.i) \
             from unnest(d.kh) with ordinality u(kh, i) \
             join t on hash_record_extended(row(t.k), 0) = u.kh) \
         where set_name = 't'",
    )
    .await
    .unwrap();
    db.batch_execute("update t set f = null where k = 'a'")
        .await
        .unwrap();
    edit_file(&p, |rows| {
        let c = rows.iter_mut().find(|r| r["k"] == "c").unwrap();
        c["n"] = serde_json::json!(6);
    });
    let (code, run, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 1, "{err}\n{run}");
    let c = conflicts(&run);
    assert_eq!(c.len(), 1, "only the ambiguous edit: {run}");
    assert_eq!(c[0]["key"][0], "a", "{run}");
    assert_eq!(run["report"]["sets"][0]["updates"], 1, "{run}");
    // The conflict stopped the import; settle it and import again.
    db.batch_execute("update t set f = 0 where k = 'a'")
        .await
        .unwrap();
    let (code, run, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 0, "{err}\n{run}");
    assert_eq!(row(&target, "c").await, (None, Some("6".into())));
    let version: i32 = db
        .query_one(
            "select hash_version from shipsafe.data_base where set_name = 't'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 3, "the base is written back in the current hash");
}

/// Every value the record hash takes for NULL (float4/float8 0 and -0,
/// numeric NaN, Infinity and -Infinity): an edit to NULL in the target is
/// reported, column by column.
#[tokio::test]
async fn every_value_that_hashes_like_null_is_told_from_null() {
    let source = TestDb::new().await;
    let target = TestDb::new().await;
    let table = "create table z (id serial primary key, k text not null unique, \
                 a float4, b float8, c numeric, d numeric, e numeric);";
    source
        .client()
        .await
        .batch_execute(&format!(
            "{table} insert into z (k, a, b, c, d, e) values ('x', 0, '-0', 'NaN', 'Infinity', '-Infinity');"
        ))
        .await
        .unwrap();
    target.client().await.batch_execute(table).await.unwrap();
    let p = exported(
        &source,
        &target,
        "[data.z]\ntable = \"z\"\nkey = [\"k\"]\ncolumns = [\"k\", \"a\", \"b\", \"c\", \"d\", \"e\"]\n",
    );
    let (code, _, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 0, "{err}");
    let db = target.client().await;
    for column in ["a", "b", "c", "d", "e"] {
        let before: String = db
            .query_one(&format!("select {column}::text from z"), &[])
            .await
            .unwrap()
            .get(0);
        db.batch_execute(&format!("update z set {column} = null"))
            .await
            .unwrap();
        let (code, run, err) = p.json(&["data", "diff", "--all", "--env", "staging"]);
        assert_eq!(code, 1, "{column} ({before}) to NULL: {err}\n{run}");
        assert_eq!(conflicts(&run).len(), 1, "{column}: {run}");
        db.batch_execute(&format!("update z set {column} = '{before}'"))
            .await
            .unwrap();
    }
}

/// NULL in a natural key matches no row (NULL equals nothing, and a unique
/// index lets such rows repeat): export refuses it, naming the row, and so
/// does an import of a hand-edited file, instead of a false "deleted in
/// the target" conflict on every import and a second copy with --force.
#[tokio::test]
async fn a_null_in_a_natural_key_is_refused_naming_the_row() {
    let source = TestDb::new().await;
    let target = TestDb::new().await;
    let table =
        "create table u (id serial primary key, a text not null, b text, v int, unique (a, b));";
    source
        .client()
        .await
        .batch_execute(&format!(
            "{table} insert into u (a, b, v) values ('x', 'y', 1), ('x', null, 2);"
        ))
        .await
        .unwrap();
    target.client().await.batch_execute(table).await.unwrap();
    let p = Project::new(
        &[
            ("local", "open", source.url()),
            ("staging", "open", target.url()),
        ],
        "[data.u]\ntable = \"u\"\nkey = [\"a\", \"b\"]\ncolumns = [\"a\", \"b\", \"v\"]\n",
    );
    let (code, _, err) = p.json(&["data", "export", "--all", "--env", "local"]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("[\"x\", null]") && err.contains("NULL in its key"),
        "{err}"
    );
    // A file written by hand with such a row.
    source
        .client()
        .await
        .batch_execute("delete from u where b is null")
        .await
        .unwrap();
    let (code, _, err) = p.json(&["data", "export", "--all", "--env", "local"]);
    assert_eq!(code, 0, "{err}");
    let path = p.dir.path().join("data/u.json");
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    file["rows"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"a": "x", "b": null, "v": 2}));
    std::fs::write(&path, serde_json::to_string_pretty(&file).unwrap()).unwrap();
    for _ in 0..2 {
        let (code, _, err) = p.json(&["data", "import", "--all", "--env", "staging", "--force"]);
        assert_ne!(code, 0, "{err}");
        assert!(err.contains("NULL in its key"), "{err}");
    }
    let rows: i64 = target
        .client()
        .await
        .query_one("select count(*) from u", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "nothing was imported");
}

/// A hand-edited file with a misspelt field (or a configured column left
/// out) is refused, naming the row and the field, instead of importing
/// NULL over the column.
#[tokio::test]
async fn a_misspelt_or_missing_field_is_refused_not_imported_as_null() {
    let (_source, target, p) = imported("('a', 1.5, 2), ('b', 1, 2)").await;
    let before = row(&target, "a").await;
    for (edit, says) in [
        (
            (|r: &mut serde_json::Value| {
                let f = r.as_object_mut().unwrap().remove("f").unwrap();
                r["ff"] = f;
            }) as fn(&mut serde_json::Value),
            "no field \"f\"",
        ),
        (
            |r: &mut serde_json::Value| r["fx"] = serde_json::json!(1),
            "the field \"fx\" is not a column of public.t",
        ),
    ] {
        let path = p.dir.path().join("data/t.json");
        let original = std::fs::read_to_string(&path).unwrap();
        edit_file(&p, |rows| {
            edit(rows.iter_mut().find(|r| r["k"] == "a").unwrap())
        });
        let (code, _, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
        assert_ne!(code, 0, "{err}");
        assert!(
            err.contains("row 1 of its file") && err.contains(says),
            "{err}"
        );
        assert_eq!(row(&target, "a").await, before, "nothing was changed");
        std::fs::write(&path, original).unwrap();
    }
}

/// A change to a value equal to the old one under `=` (interval '30 days'
/// and '1 mon', numeric 1.50 and 1.5, citext 'Abc' and 'abc', jsonb 1.0
/// and 1) reaches the target: values are compared by their text.
#[tokio::test]
async fn changes_equal_under_equality_still_reach_the_target() {
    let source = TestDb::new().await;
    let target = TestDb::new().await;
    let table = "create extension if not exists citext; \
                 create table e (id serial primary key, k text not null unique, \
                 iv interval, n numeric, c citext, j jsonb);";
    source
        .client()
        .await
        .batch_execute(&format!(
            "{table} insert into e (k, iv, n, c, j) values ('x', '30 days', 1.50, 'Abc', '{{\"x\": 1.0}}');"
        ))
        .await
        .unwrap();
    target.client().await.batch_execute(table).await.unwrap();
    let p = exported(
        &source,
        &target,
        "[data.e]\ntable = \"e\"\nkey = [\"k\"]\ncolumns = [\"k\", \"iv\", \"n\", \"c\", \"j\"]\n",
    );
    let (code, _, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 0, "{err}");
    source
        .client()
        .await
        .batch_execute("update e set iv = '1 mon', n = 1.5, c = 'abc', j = '{\"x\": 1}'")
        .await
        .unwrap();
    let (code, _, err) = p.json(&["data", "export", "--all", "--env", "local"]);
    assert_eq!(code, 0, "{err}");
    let (code, run, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["report"]["sets"][0]["updates"], 1, "{run}");
    let text = |db: &TestDb| {
        let db = db.url().clone();
        async move {
            let c = shipsafe_pg::connect(&db).await.unwrap();
            let r = c
                .query_one("select iv::text, n::text, c::text, j::text from e", &[])
                .await
                .unwrap();
            (0..4).map(|i| r.get::<_, String>(i)).collect::<Vec<_>>()
        }
    };
    assert_eq!(text(&target).await, text(&source).await);
    // Imported again: nothing to do, and an edit of that kind in the
    // target is a conflict.
    let (code, run, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["report"]["sets"][0]["updates"], 0, "{run}");
    target
        .client()
        .await
        .batch_execute("update e set iv = '30 days'")
        .await
        .unwrap();
    let (code, run, err) = p.json(&["data", "diff", "--all", "--env", "staging"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(conflicts(&run).len(), 1, "{run}");
}

/// Columns of types without an extended hash function (money, bit,
/// varbit, tsvector, tsquery) are exported, imported and compared like
/// any other (by their text), and an edit to them is seen.
#[tokio::test]
async fn types_without_an_extended_hash_import_and_compare() {
    let source = TestDb::new().await;
    let target = TestDb::new().await;
    let table = "create table m (id serial primary key, k text not null unique, \
                 price money, flags bit(3), bits varbit, doc tsvector, q tsquery);";
    source
        .client()
        .await
        .batch_execute(&format!(
            "{table} insert into m (k, price, flags, bits, doc, q) values \
             ('x', 12.5, b'101', b'1101', to_tsvector('simple', 'fat cats'), to_tsquery('simple', 'fat & cat'));"
        ))
        .await
        .unwrap();
    target.client().await.batch_execute(table).await.unwrap();
    let p = exported(
        &source,
        &target,
        "[data.m]\ntable = \"m\"\nkey = [\"k\"]\ncolumns = [\"k\", \"price\", \"flags\", \"bits\", \"doc\", \"q\"]\n",
    );
    let (code, run, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 0, "{err}\n{run}");
    let text = "select k, price::text, flags::text, bits::text, doc::text, q::text from m";
    let read = |db: &TestDb| {
        let url = db.url().clone();
        async move {
            let c = shipsafe_pg::connect(&url).await.unwrap();
            let r = c.query_one(text, &[]).await.unwrap();
            (0..6).map(|i| r.get::<_, String>(i)).collect::<Vec<_>>()
        }
    };
    assert_eq!(read(&target).await, read(&source).await);
    let (code, run, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["report"]["sets"][0]["updates"], 0, "{run}");
    target
        .client()
        .await
        .batch_execute("update m set flags = b'111'")
        .await
        .unwrap();
    let (code, run, err) = p.json(&["data", "diff", "--all", "--env", "staging"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(conflicts(&run).len(), 1, "{run}");
}

/// A `character(n)` key is compared as its type compares it (trailing
/// blanks do not count), so a child referencing a parent by such a key
/// resolves, and `diff` and `import` agree.
#[tokio::test]
async fn a_fixed_length_character_key_resolves_references() {
    let source = TestDb::new().await;
    let target = TestDb::new().await;
    let schema = "create table p (id serial primary key, code char(5) not null unique); \
                  create table c (id serial primary key, name text not null unique, p_id int references p (id));";
    source
        .client()
        .await
        .batch_execute(&format!(
            "{schema} insert into p (code) values ('ab'), ('cdefg'); \
             insert into c (name, p_id) select 'c1', id from p where code = 'ab'; \
             insert into c (name, p_id) select 'c2', id from p where code = 'cdefg';"
        ))
        .await
        .unwrap();
    target
        .client()
        .await
        .batch_execute(&format!("{schema} insert into p (code) values ('zz');"))
        .await
        .unwrap();
    let p = exported(
        &source,
        &target,
        "[data.p]\ntable = \"p\"\nkey = [\"code\"]\n\n[data.c]\ntable = \"c\"\nkey = [\"name\"]\nreferences.parent = { table = \"p\", key = [\"code\"], column = \"p_id\" }\n",
    );
    let (code, diff, err) = p.json(&["data", "diff", "--all", "--env", "staging"]);
    assert_eq!(code, 0, "{err}\n{diff}");
    let (code, run, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 0, "{err}\n{run}");
    let linked: i64 = target
        .client()
        .await
        .query_one(
            "select count(*) from c join p on p.id = c.p_id where (c.name, p.code) in (('c1', 'ab'), ('c2', 'cdefg'))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(linked, 2);
    let (code, run, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 0, "{err}");
    for set in run["report"]["sets"].as_array().unwrap() {
        assert_eq!(set["inserts"], 0, "{run}");
        assert_eq!(set["updates"], 0, "{run}");
    }
}

/// A child-only import when the target deleted a parent the file's child
/// still names (the target's child lost the reference): the file's
/// reference is unresolved and reported, not taken as "nothing to do".
#[tokio::test]
async fn a_child_whose_parent_the_target_deleted_is_unresolved_not_unchanged() {
    let source = TestDb::new().await;
    let target = TestDb::new().await;
    let schema = "create table p (id serial primary key, code text not null unique); \
                  create table c (id serial primary key, name text not null unique, p_id int references p (id));";
    let rows = "insert into p (code) values ('A'), ('B'); \
                insert into c (name, p_id) select 'c1', id from p where code = 'A'; \
                insert into c (name, p_id) select 'c2', id from p where code = 'B';";
    for db in [&source, &target] {
        db.client()
            .await
            .batch_execute(&format!("{schema} {rows}"))
            .await
            .unwrap();
    }
    let p = exported(
        &source,
        &target,
        "[data.p]\ntable = \"p\"\nkey = [\"code\"]\n\n[data.c]\ntable = \"c\"\nkey = [\"name\"]\nreferences.parent = { table = \"p\", key = [\"code\"], column = \"p_id\" }\n",
    );
    let (code, _, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 0, "{err}");
    target
        .client()
        .await
        .batch_execute(
            "update c set p_id = null where name = 'c2'; delete from p where code = 'B';",
        )
        .await
        .unwrap();
    let (code, run, err) = p.json(&["data", "import", "c", "--env", "staging"]);
    assert_eq!(code, 1, "{err}\n{run}");
    let unresolved = run["report"]["sets"][0]["unresolved"].to_string();
    assert!(
        unresolved.contains("c2") && unresolved.contains("\"B\""),
        "{run}"
    );
}

/// A generated column is left out of a set's default columns (the database
/// computes it; writing it fails the import), and naming it in `columns`
/// is refused with the reason.
#[tokio::test]
async fn generated_columns_are_left_out_not_written() {
    let source = TestDb::new().await;
    let target = TestDb::new().await;
    let table = "create table g (id serial primary key, k text not null unique, price numeric, \
                 with_tax numeric generated always as (price * 1.2) stored);";
    source
        .client()
        .await
        .batch_execute(&format!(
            "{table} insert into g (k, price) values ('x', 10);"
        ))
        .await
        .unwrap();
    target.client().await.batch_execute(table).await.unwrap();
    let envs = [
        ("local", "open", source.url()),
        ("staging", "open", target.url()),
    ];
    let p = Project::new(&envs, "[data.g]\ntable = \"g\"\nkey = [\"k\"]\n");
    let (code, _, err) = p.json(&["data", "export", "--all", "--env", "local"]);
    assert_eq!(code, 0, "{err}");
    let (code, run, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 0, "{err}\n{run}");
    let with_tax: String = target
        .client()
        .await
        .query_one("select with_tax::text from g where k = 'x'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(with_tax, "12.0");
    let p = Project::new(
        &envs,
        "[data.g]\ntable = \"g\"\nkey = [\"k\"]\ncolumns = [\"k\", \"with_tax\"]\n",
    );
    let (code, _, err) = p.json(&["data", "export", "--all", "--env", "local"]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("\"with_tax\"") && err.contains("generated"),
        "{err}"
    );
}

/// A reference whose column is a foreign key to a unique column other than
/// the primary key would resolve to nothing (every child exported with a
/// null reference): refused at export, naming both columns.
#[tokio::test]
async fn a_reference_to_a_non_key_column_is_refused() {
    let source = TestDb::new().await;
    source
        .client()
        .await
        .batch_execute(
            "create table p (id serial primary key, code text not null unique); \
             create table c (id serial primary key, name text not null unique, p_code text references p (code)); \
             insert into p (code) values ('A'); insert into c (name, p_code) values ('c1', 'A');",
        )
        .await
        .unwrap();
    let p = Project::new(
        &[("local", "open", source.url())],
        "[data.c]\ntable = \"c\"\nkey = [\"name\"]\nreferences.parent = { table = \"p\", key = [\"code\"], column = \"p_code\" }\n",
    );
    let (code, _, err) = p.json(&["data", "export", "--all", "--env", "local"]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("p_code is a foreign key to public.p.code") && err.contains("primary key id"),
        "{err}"
    );
    assert!(
        !p.dir.path().join("data/c.json").exists(),
        "no file written"
    );
}
