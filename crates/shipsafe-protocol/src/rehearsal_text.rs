//! The rehearsal part of a run report as text: per statement, its time,
//! locks, rewrites, dropped data and row counts, then the verdict's reasons
//! and the round trip.

use serde_json::Value;

fn size(bytes: i64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{} kB", (bytes + 1023) / 1024)
    }
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

fn n(v: &Value, key: &str) -> i64 {
    v[key].as_i64().unwrap_or(0)
}

fn each<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v[key].as_array().into_iter().flatten()
}

pub fn render(r: &Value) -> String {
    let mut t = format!(
        "rehearsal on {}: {} (round trip: {}){}\n",
        s(r, "clone"),
        s(r, "verdict"),
        s(&r["round_trip"], "status"),
        if r["backup_verified"].as_bool() == Some(true) {
            format!("; backup {} restored and verified", s(r, "backup_id"))
        } else {
            String::new()
        }
    );
    if let Some(p) = r["privacy"].as_str() {
        t.push_str(&format!("  privacy: {p}\n"));
    }
    let tm = &r["timings"];
    t.push_str(&format!(
        "  clone {} ms, apply {} ms, verify {} ms, round trip {} ms\n",
        n(tm, "clone_ms"),
        n(tm, "apply_ms"),
        n(tm, "verify_ms"),
        n(tm, "round_trip_ms")
    ));
    for m in each(r, "migrations") {
        for st in each(m, "statements") {
            t.push_str(&format!(
                "  {}_{} line {}: {} ms  {}\n",
                s(m, "version"),
                s(m, "name"),
                n(st, "line"),
                n(st, "duration_ms"),
                s(st, "sql")
            ));
            for l in each(st, "locks") {
                // New relations and the row locks DML takes on indexes are
                // noise here; the JSON report has every lock.
                let routine_index_lock = s(l, "kind") == "index"
                    && matches!(s(l, "mode"), "RowExclusiveLock" | "AccessShareLock");
                if !l["existing"].as_bool().unwrap_or(false) || routine_index_lock {
                    continue;
                }
                t.push_str(&format!(
                    "      lock {} on {} {} ({}), held {} ms{}\n",
                    s(l, "mode"),
                    s(l, "kind"),
                    s(l, "relation"),
                    size(n(l, "relation_bytes")),
                    n(l, "held_ms"),
                    if st["locks_sampled"].as_bool() == Some(true) {
                        " (sampled)"
                    } else {
                        ""
                    }
                ));
            }
            for w in each(st, "rewrites") {
                t.push_str(&format!(
                    "      rewrites {} {} ({} → {})\n",
                    s(w, "kind"),
                    s(w, "relation"),
                    size(n(w, "bytes_before")),
                    size(n(w, "bytes_after"))
                ));
            }
            for c in each(st, "dropped_columns") {
                let lost = c["non_null_values"]
                    .as_i64()
                    .map_or("an unknown number of".to_string(), |v| v.to_string());
                t.push_str(&format!(
                    "      drops column {}.{}: {lost} non-null value(s) lost\n",
                    s(c, "table"),
                    s(c, "column")
                ));
            }
            for d in each(st, "dropped_tables") {
                t.push_str(&format!(
                    "      drops table {}: {} row(s)\n",
                    s(d, "table"),
                    d["rows"]
                        .as_i64()
                        .map_or("unknown".to_string(), |v| v.to_string())
                ));
            }
            for row in each(st, "rows") {
                t.push_str(&format!(
                    "      rows {}: {} → {}\n",
                    s(row, "table"),
                    row["before"]
                        .as_i64()
                        .map_or("?".to_string(), |v| v.to_string()),
                    n(row, "after")
                ));
            }
        }
    }
    let reasons: Vec<&str> = each(r, "reasons").filter_map(Value::as_str).collect();
    if !reasons.is_empty() {
        t.push_str(if s(r, "verdict") == "blocked" {
            "  blocked:\n"
        } else {
            "  needs acknowledging (--accept-risk):\n"
        });
        for reason in reasons {
            t.push_str(&format!("    - {reason}\n"));
        }
    }
    t.push_str(&format!(
        "  round trip: {}\n",
        s(&r["round_trip"], "detail")
    ));
    t
}

/// A size as people read it: MB from 1 MB up, else kB.
pub fn mib(bytes: i64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{} kB", (bytes + 1023) / 1024)
    }
}
