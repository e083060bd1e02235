//! The file's rows are typed with one cast per column instead of
//! `jsonb_populate_record`; both must give the same values, or fail alike.
#![allow(clippy::unwrap_used)]

use futures::SinkExt;
use shipsafe_config::DataSetConfig;
use shipsafe_data::SetDef;
use shipsafe_data::columns::Layout;
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

/// Rows split into text fields on the client ([`Layout`]) type as
/// `jsonb_populate_record` types the row; a row only the server's JSON
/// reading renders exactly is refused, so the file goes the `jsonb` way.
#[tokio::test]
async fn rows_split_into_text_read_as_jsonb_populate_record_does() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client.batch_execute(TABLE).await.unwrap();
    let cfg: DataSetConfig = toml::from_str("table = \"t\"\nkey = [\"s\"]").unwrap();
    let def = SetDef::resolve(&client, "t", &cfg).await.unwrap();
    let layout = Layout::of(&def).expect("every type here can be split");
    let col = |c: &str| format!("f.{}", layout.column(c).unwrap());
    let cols = def
        .typed_columns_with(&|c| format!("{}::jsonb", col(c)), &col)
        .unwrap();
    let names = def.file_columns();
    let list: Vec<String> = names.iter().map(|c| format!("x.{c}")).collect();
    let by_split = format!(
        "select row({})::text from ss_file f, lateral (select {}) x",
        list.join(", "),
        cols.join(", ")
    );
    let by_populate = format!(
        "select row({})::text from jsonb_populate_record(null::t, $1::text::jsonb) x",
        list.join(", ")
    );
    let more = [
        r#"{"s": "tab\there\nnew \\ line \u00e9 \ud83d\ude00", "v": "a\\b", "n": -0, "f": -0.0, "i": -0}"#,
        r#"{"n": -0.000, "f": 0.000001, "b": 12, "j": [1, {"b": 2, "a": 1}], "js": {"z": 1, "a": [true]}, "ok": false}"#,
        r#"{"s": "dup", "s": "last wins", "j": "str", "js": null, "iv": null}"#,
        r#"{"s": true, "v": 12.50, "u": null}"#,
    ];
    let mut split = 0;
    for row in ROWS.iter().chain(&more) {
        let mut line = Vec::new();
        if !layout.line(1, row, &mut line) {
            assert!(
                row.contains("1e300") || row.contains("{\"nested\""),
                "refused a row the split can read: {row}"
            );
            assert!(line.is_empty());
            continue;
        }
        split += 1;
        client
            .batch_execute(&format!(
                "drop table if exists ss_file; create temp table ss_file ({})",
                layout.table_columns()
            ))
            .await
            .unwrap();
        let sink = client.copy_in("copy ss_file from stdin").await.unwrap();
        futures::pin_mut!(sink);
        sink.send(bytes::Bytes::from(line)).await.unwrap();
        sink.finish().await.unwrap();
        let got = client
            .query_one(&by_split, &[])
            .await
            .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
            .unwrap_or_else(|e| format!("error {:?}", e.code()));
        assert_eq!(got, typed(&client, &by_populate, row).await, "{row}");
    }
    assert_eq!(split, ROWS.len() + more.len() - 2);
}
