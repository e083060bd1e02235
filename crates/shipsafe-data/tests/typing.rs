//! The file's rows are typed with one cast per column instead of
//! `jsonb_populate_record`; both must give the same values, or fail alike.
#![allow(clippy::unwrap_used)]

use shipsafe_config::DataSetConfig;
use shipsafe_data::SetDef;
use shipsafe_testkit::TestDb;

const TABLE: &str = "create type mood as enum ('ok', 'sad');
create table t (id serial primary key, i int, b bigint, n numeric(10,2), f double precision,
  s text, v varchar(5), ok boolean, at timestamptz(0), d date, u uuid, j jsonb, js json, m mood,
  iv interval, ip inet, by bytea)";

const ROWS: &[&str] = &[
    r#"{"i": 1, "b": "9007199254740993", "n": 1.005, "f": 0.1, "s": "a\"b\\c", "v": "abc", "ok": true,
        "at": "2025-01-01T10:00:00.7+02", "d": "2025-02-03", "u": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
        "j": {"k": [1, "x", null]}, "js": "plain", "m": "sad", "iv": "1 day 2 hours", "ip": "10.0.0.1/32", "by": "\\x00ff"}"#,
    r#"{"i": "7", "n": "12", "f": 1e300, "s": 5, "v": null, "ok": "false", "j": null, "js": [1, 2], "m": null}"#,
    r#"{"s": {"nested": true}, "j": "text", "n": -0.004, "b": -1}"#,
    r#"{}"#,
];

/// Each row typed both ways, as text, or the error's SQLSTATE.
async fn typed(client: &tokio_postgres::Client, select: &str, row: &str) -> String {
    match client.query_one(select, &[&row]).await {
        Ok(r) => r.get::<_, Option<String>>(0).unwrap_or_default(),
        Err(e) => format!("error {:?}", e.code()),
    }
}

#[tokio::test]
async fn casts_read_a_row_as_jsonb_populate_record_does() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client.batch_execute(TABLE).await.unwrap();
    let cfg: DataSetConfig = toml::from_str("table = \"t\"\nkey = [\"s\"]").unwrap();
    let def = SetDef::resolve(&client, "t", &cfg).await.unwrap();
    let cols = def
        .typed_columns("r")
        .expect("every type here is read by a cast");
    let mut names: Vec<&String> = def.types.keys().collect();
    names.sort();
    let list: Vec<String> = names.iter().map(|c| format!("x.{c}")).collect();
    let by_cast = format!(
        "select row({})::text from (select $1::text::jsonb as r) f, lateral (select {}) x",
        list.join(", "),
        cols.join(", ")
    );
    let by_populate = format!(
        "select row({})::text from jsonb_populate_record(null::t, $1::text::jsonb) x",
        list.join(", ")
    );
    for row in ROWS {
        assert_eq!(
            typed(&client, &by_cast, row).await,
            typed(&client, &by_populate, row).await,
            "{row}"
        );
    }
    // Values the column cannot hold fail both ways (the over-long varchar
    // when written: a cast would cut it short).
    for bad in [r#"{"i": 1.5}"#, r#"{"m": "happy"}"#, r#"{"at": "soon"}"#] {
        let (a, b) = (
            typed(&client, &by_cast, bad).await,
            typed(&client, &by_populate, bad).await,
        );
        assert!(
            a.starts_with("error") && b.starts_with("error"),
            "{bad}: {a} / {b}"
        );
    }
    let long = r#"{"v": "abcdefgh"}"#;
    assert!(
        typed(&client, &by_populate, long)
            .await
            .starts_with("error")
    );
    let e = client
        .batch_execute(&format!(
            "insert into t (v) select x.v from (select '{long}'::jsonb as r) f, lateral (select {}) x",
            cols.join(", ")
        ))
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("too long"), "{e:?}");
}

#[tokio::test]
async fn arrays_composites_domains_and_fixed_length_text_keep_jsonb_populate_record() {
    let db = TestDb::new().await;
    let client = db.client().await;
    for (ddl, col) in [
        ("create table t (id int, a int[])", "a"),
        (
            "create type pair as (x int, y int); create table t (id int, a pair)",
            "a",
        ),
        (
            "create domain pos as int check (value > 0); create table t (id int, a pos)",
            "a",
        ),
        ("create table t (id int, a char(3))", "a"),
        ("create table t (id int, a bit(3))", "a"),
    ] {
        client
            .batch_execute(&format!(
                "drop schema public cascade; create schema public; {ddl}"
            ))
            .await
            .unwrap();
        let cfg: DataSetConfig = toml::from_str("table = \"t\"\nkey = [\"id\"]").unwrap();
        let def = SetDef::resolve(&client, "t", &cfg).await.unwrap();
        assert!(def.typed_columns("r").is_none(), "{ddl}: {col}");
    }
}
