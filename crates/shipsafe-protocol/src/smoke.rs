//! `[[smoke]]`: HTTP checks against an environment's `app_url`.
//!
//! Before the first request shipsafe waits for the app to answer at all
//! (it may be restarting after a deploy). Each check is retried a few times
//! on connection errors and 5xx answers, then judged: status, and the
//! `expect_json` subset. `capture` keeps fields of a response for later
//! checks as `{{name}}`. Request bodies and responses are never printed:
//! they carry credentials and tokens.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use shipsafe_config::{SmokeConfig, Template, VarSource};

/// How long to wait for the app to answer before the first check.
pub const READINESS: Duration = Duration::from_secs(20);
const ATTEMPTS: u32 = 3;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SmokeOutcome {
    pub name: String,
    pub method: String,
    pub path: String,
    pub status: Option<u16>,
    pub ok: bool,
    pub attempts: u32,
    pub duration_ms: u64,
    pub error: Option<String>,
}

/// `{{name}}` → captured value.
fn substitute(s: &str, captured: &HashMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in captured {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    out
}

fn resolve(
    s: &str,
    vars: &dyn VarSource,
    captured: &HashMap<String, String>,
) -> Result<String, String> {
    let t = Template::new(s)?;
    let v = t
        .resolve(vars)
        .map_err(|m| format!("uses ${{{}}}, which is not set", m.name))?;
    Ok(substitute(&v, captured))
}

/// TOML body → JSON, resolving `${VAR}` and `{{name}}` in strings.
fn to_json(
    v: &toml::Value,
    vars: &dyn VarSource,
    captured: &HashMap<String, String>,
) -> Result<serde_json::Value, String> {
    Ok(match v {
        toml::Value::String(s) => serde_json::Value::String(resolve(s, vars, captured)?),
        toml::Value::Integer(i) => serde_json::json!(i),
        toml::Value::Float(f) => serde_json::json!(f),
        toml::Value::Boolean(b) => serde_json::json!(b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => serde_json::Value::Array(
            a.iter()
                .map(|x| to_json(x, vars, captured))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, x)| Ok((k.clone(), to_json(x, vars, captured)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// Whether `actual` contains `expected`: objects by key (recursively),
/// everything else by equality.
pub fn json_contains(actual: &serde_json::Value, expected: &serde_json::Value) -> bool {
    match (actual, expected) {
        (serde_json::Value::Object(a), serde_json::Value::Object(e)) => e
            .iter()
            .all(|(k, ev)| a.get(k).is_some_and(|av| json_contains(av, ev))),
        (a, e) => a == e,
    }
}

/// A field by dotted path (`data.token`, `items.0.id`), as text.
fn field(v: &serde_json::Value, path: &str) -> Option<String> {
    let mut cur = v;
    for part in path.split('.') {
        cur = match cur {
            serde_json::Value::Object(o) => o.get(part)?,
            serde_json::Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(match cur {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Waits until anything answers at `base` (any status counts).
pub async fn wait_ready(
    client: &reqwest::Client,
    base: &str,
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        match client.get(base).send().await {
            Ok(_) => return Ok(()),
            Err(e) => last = shipsafe_pg::error_chain(&e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!(
        "the app at {base} did not answer within {}s ({last})",
        limit.as_secs()
    ))
}

/// Runs every check in order against `base` (the environment's app_url).
pub async fn run(
    base: &str,
    tests: &[SmokeConfig],
    vars: &dyn VarSource,
    readiness: Duration,
) -> Vec<SmokeOutcome> {
    let base = base.trim_end_matches('/').to_string();
    let client = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            return tests
                .iter()
                .map(|t| failed(t, &t.path, format!("no HTTP client: {e}")))
                .collect();
        }
    };
    if let Err(e) = wait_ready(&client, &base, readiness).await {
        return tests
            .iter()
            .map(|t| failed(t, &t.path, e.clone()))
            .collect();
    }
    let mut captured: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for t in tests {
        out.push(one(&client, &base, t, vars, &mut captured).await);
    }
    out
}

fn failed(t: &SmokeConfig, path: &str, error: String) -> SmokeOutcome {
    SmokeOutcome {
        name: t.name.clone(),
        method: t.method.to_ascii_uppercase(),
        path: path.to_string(),
        status: None,
        ok: false,
        attempts: 0,
        duration_ms: 0,
        error: Some(error),
    }
}

async fn one(
    client: &reqwest::Client,
    base: &str,
    t: &SmokeConfig,
    vars: &dyn VarSource,
    captured: &mut HashMap<String, String>,
) -> SmokeOutcome {
    let started = Instant::now();
    let path = substitute(&t.path, captured);
    let method = t.method.to_ascii_uppercase();
    let body = match t
        .json
        .as_ref()
        .map(|j| to_json(j, vars, captured))
        .transpose()
    {
        Ok(b) => b,
        Err(e) => return failed(t, &path, format!("request body {e}")),
    };
    let mut headers = Vec::new();
    for (k, v) in &t.headers {
        match v.resolve(vars) {
            Ok(v) => headers.push((k.clone(), substitute(&v, captured))),
            Err(m) => {
                return failed(
                    t,
                    &path,
                    format!("header {k} uses ${{{}}}, which is not set", m.name),
                );
            }
        }
    }
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut attempts = 0;
    let mut last_err = None;
    let mut response = None;
    while attempts < ATTEMPTS {
        attempts += 1;
        let mut req = client.request(m.clone(), format!("{base}{path}"));
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        if let Some(b) = &body {
            req = req.json(b);
        }
        match req.send().await {
            Ok(r) if r.status().is_server_error() && attempts < ATTEMPTS => {
                last_err = Some(format!("status {}", r.status().as_u16()));
            }
            Ok(r) => {
                response = Some(r);
                break;
            }
            Err(e) => last_err = Some(shipsafe_pg::error_chain(&e)),
        }
        tokio::time::sleep(Duration::from_millis(300 * u64::from(attempts))).await;
    }
    let mut outcome = SmokeOutcome {
        name: t.name.clone(),
        method,
        path: path.clone(),
        status: None,
        ok: false,
        attempts,
        duration_ms: 0,
        error: None,
    };
    let Some(r) = response else {
        outcome.error = Some(format!(
            "no answer after {attempts} attempts: {}",
            last_err.unwrap_or_default()
        ));
        outcome.duration_ms = started.elapsed().as_millis() as u64;
        return outcome;
    };
    let status = r.status().as_u16();
    outcome.status = Some(status);
    let json: Option<serde_json::Value> = r.json().await.ok();
    let mut problems = Vec::new();
    if status != t.expect_status {
        problems.push(format!("expected status {}, got {status}", t.expect_status));
    }
    if let Some(expected) = &t.expect_json {
        match (to_json(expected, vars, captured), &json) {
            (Ok(e), Some(actual)) if json_contains(actual, &e) => {}
            (Ok(e), Some(_)) => problems.push(format!("the response JSON does not contain {e}")),
            (Ok(_), None) => problems.push("the response is not JSON".into()),
            (Err(e), _) => problems.push(format!("expect_json {e}")),
        }
    }
    for (name, path) in &t.capture {
        match json.as_ref().and_then(|j| field(j, path)) {
            Some(v) => {
                captured.insert(name.clone(), v);
            }
            None => problems.push(format!("capture {name}: the response has no field {path}")),
        }
    }
    outcome.ok = problems.is_empty();
    outcome.error = (!problems.is_empty()).then(|| problems.join("; "));
    outcome.duration_ms = started.elapsed().as_millis() as u64;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_matching() {
        let a = serde_json::json!({"status": "healthy", "db": {"ok": true, "ms": 3}, "v": [1, 2]});
        assert!(json_contains(&a, &serde_json::json!({"status": "healthy"})));
        assert!(json_contains(&a, &serde_json::json!({"db": {"ok": true}})));
        assert!(!json_contains(
            &a,
            &serde_json::json!({"db": {"ok": false}})
        ));
        assert!(!json_contains(&a, &serde_json::json!({"missing": 1})));
        assert!(json_contains(&a, &serde_json::json!({"v": [1, 2]})));
    }

    #[test]
    fn fields_by_path() {
        let v = serde_json::json!({"data": {"token": "abc", "items": [{"id": 7}]}});
        assert_eq!(field(&v, "data.token").as_deref(), Some("abc"));
        assert_eq!(field(&v, "data.items.0.id").as_deref(), Some("7"));
        assert_eq!(field(&v, "data.nope"), None);
    }

    #[test]
    fn variables_and_captures_in_bodies() {
        let vars = [("SMOKE_PASSWORD", "pw")];
        let mut cap = HashMap::new();
        cap.insert("token".to_string(), "t0k".to_string());
        let v: toml::Value = toml::from_str("a = { user = \"admin\", password = \"${SMOKE_PASSWORD}\", auth = \"Bearer {{token}}\" }").unwrap();
        let j = to_json(&v["a"], &vars, &cap).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"user": "admin", "password": "pw", "auth": "Bearer t0k"})
        );
        let none: [(&str, &str); 0] = [];
        assert!(
            to_json(&v["a"], &none, &cap)
                .unwrap_err()
                .contains("SMOKE_PASSWORD")
        );
    }
}
