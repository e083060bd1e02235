//! Default and common passwords among the password hashes `[readiness]
//! credentials` names (bcrypt, argon2, Django and Werkzeug PBKDF2). Only
//! who matched is reported, never which password.

use base64::Engine as _;
use shipsafe_pg::quote_ident;

use super::model::{Def, Evidence, Item};
use crate::facts::{Facts, some_of};

/// Passwords seed apps ship with and people keep: tried against each hash,
/// with the account's own name and the project's.
const COMMON: &[&str] = &[
    "password",
    "Password1",
    "password123",
    "admin",
    "admin123",
    "Admin@123",
    "administrator",
    "123456",
    "12345678",
    "123456789",
    "qwerty",
    "letmein",
    "welcome",
    "changeme",
    "secret",
    "root",
    "toor",
    "test",
    "test123",
    "demo",
    "default",
    "superadmin",
    "P@ssw0rd",
];

/// At most this many accounts per credential source are tried.
const MAX_ROWS: i64 = 50;

pub(super) async fn weak_passwords(f: &Facts<'_>, def: &Def) -> Item {
    let sources = &f.readiness().credentials;
    if sources.is_empty() {
        return def.unknown(
            "config",
            "no [readiness] credentials configured: no account's password hash is checked",
            Some("list the admin accounts' table under [readiness] credentials, e.g. { table = \"users\", user = \"email\", hash = \"password_hash\", where = \"role = 'admin'\" }".into()),
        );
    }
    let db = match f.db(def) {
        Ok(db) => db,
        Err(item) => return *item,
    };
    let project = f.config.project_name();
    let mut weak = Vec::new();
    let mut checked = 0usize;
    let mut unsupported = 0usize;
    let mut queries = Vec::new();
    for c in sources {
        let table = c
            .table
            .split('.')
            .map(quote_ident)
            .collect::<Vec<_>>()
            .join(".");
        let sql = format!(
            "select {}::text, {}::text from {table}{} limit {MAX_ROWS}",
            quote_ident(&c.user),
            quote_ident(&c.hash),
            c.filter
                .as_deref()
                .map(|w| format!(" where {w}"))
                .unwrap_or_default()
        );
        queries.push(sql.clone());
        // A read-only transaction: the configured filter cannot change rows.
        let rows = async {
            db.client
                .batch_execute("begin transaction read only")
                .await?;
            let r = db.client.query_typed(&sql, &[]).await;
            let _ = db.client.batch_execute("rollback").await;
            r
        }
        .await;
        let rows = match rows {
            Ok(r) => r,
            Err(e) => {
                let e = shipsafe_pg::health::ProbeError::from(e);
                return crate::facts::probe_unknown(def, db, &sql, e);
            }
        };
        let accounts: Vec<(String, String)> = rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, Option<String>>(0).unwrap_or_default(),
                    r.get::<_, Option<String>>(1).unwrap_or_default(),
                )
            })
            .collect();
        let project = project.clone();
        let results = tokio::task::spawn_blocking(move || {
            accounts
                .into_iter()
                .map(|(user, hash)| {
                    let verdict = is_weak(&user, &hash, &project);
                    (user, verdict)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (user, verdict) in results {
            match verdict {
                Some(true) => {
                    checked += 1;
                    weak.push(format!("{}: {user}", c.table));
                }
                Some(false) => checked += 1,
                None => unsupported += 1,
            }
        }
    }
    let value = serde_json::json!({
        "accounts_checked": checked, "unsupported_hashes": unsupported, "weak": weak,
    });
    if !weak.is_empty() {
        let mut e = Evidence::new(
            "database",
            format!(
                "{} of {checked} accounts use a default or common password: {}",
                weak.len(),
                some_of(&weak, 5)
            ),
        )
        .value(value);
        e.query = Some(queries.join("; "));
        return def.fail(
            e,
            "reset these accounts' passwords and require a strong one at first login",
        );
    }
    if checked == 0 {
        return def.unknown(
            "database",
            format!(
                "no account could be checked: {unsupported} hashes in a format shipsafe does not read (bcrypt, argon2, Django/Werkzeug PBKDF2 are read)"
            ),
            None,
        );
    }
    let mut e = Evidence::new(
        "database",
        format!(
            "{checked} accounts checked against {} common passwords and their own names: none matched{}",
            COMMON.len(),
            if unsupported > 0 {
                format!(" ({unsupported} hashes in an unread format)")
            } else {
                String::new()
            }
        ),
    )
    .value(value);
    e.query = Some(queries.join("; "));
    def.pass(e)
}

/// `Some(true)` when a common password (or the account's or project's
/// name) matches `hash`, `None` for a hash format not read here.
fn is_weak(user: &str, hash: &str, project: &str) -> Option<bool> {
    let local = user.split('@').next().unwrap_or(user);
    let mut candidates: Vec<String> = COMMON.iter().map(|s| s.to_string()).collect();
    for base in [local, project] {
        if !base.is_empty() {
            candidates.push(base.to_string());
            candidates.push(format!("{base}123"));
        }
    }
    let check = verifier(hash)?;
    Some(candidates.iter().any(|c| check(c)))
}

type Check<'a> = Box<dyn Fn(&str) -> bool + 'a>;

fn verifier(hash: &str) -> Option<Check<'_>> {
    if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
        return Some(Box::new(move |pw| {
            bcrypt::verify(pw, hash).unwrap_or(false)
        }));
    }
    if hash.starts_with("$argon2") {
        use argon2::PasswordVerifier as _;
        let parsed = argon2::PasswordHash::new(hash).ok()?;
        return Some(Box::new(move |pw| {
            argon2::Argon2::default()
                .verify_password(pw.as_bytes(), &parsed)
                .is_ok()
        }));
    }
    // Django: pbkdf2_sha256$<iterations>$<salt>$<base64 hash>
    if let Some(rest) = hash.strip_prefix("pbkdf2_sha256$") {
        let mut parts = rest.splitn(3, '$');
        let (iter, salt, want) = (parts.next()?, parts.next()?, parts.next()?);
        let iter: u32 = iter.parse().ok()?;
        let want = base64::engine::general_purpose::STANDARD
            .decode(want)
            .ok()?;
        return Some(Box::new(move |pw| {
            pbkdf2_sha256(pw, salt, iter, want.len()) == want
        }));
    }
    // Werkzeug: pbkdf2:sha256:<iterations>$<salt>$<hex hash>
    if let Some(rest) = hash.strip_prefix("pbkdf2:sha256:") {
        let mut parts = rest.splitn(3, '$');
        let (iter, salt, want) = (parts.next()?, parts.next()?, parts.next()?);
        let iter: u32 = iter.parse().ok()?;
        let want = hex(want)?;
        return Some(Box::new(move |pw| {
            pbkdf2_sha256(pw, salt, iter, want.len()) == want
        }));
    }
    None
}

fn pbkdf2_sha256(pw: &str, salt: &str, iter: u32, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len.clamp(1, 64)];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(pw.as_bytes(), salt.as_bytes(), iter, &mut out);
    out
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_and_pbkdf2_hashes_are_read() {
        let b = bcrypt::hash("admin123", 4).unwrap();
        assert_eq!(is_weak("admin@example.com", &b, "erp"), Some(true));
        let strong = bcrypt::hash("correct horse battery staple 9", 4).unwrap();
        assert_eq!(is_weak("admin@example.com", &strong, "erp"), Some(false));
        // The account's own name.
        let own = bcrypt::hash("ravi123", 4).unwrap();
        assert_eq!(is_weak("ravi@example.com", &own, "erp"), Some(true));
        // Django's format.
        let django = {
            let d = pbkdf2_sha256("changeme", "abc", 1000, 32);
            format!(
                "pbkdf2_sha256$1000$abc${}",
                base64::engine::general_purpose::STANDARD.encode(d)
            )
        };
        assert_eq!(is_weak("x", &django, "erp"), Some(true));
        let werkzeug = {
            let d = pbkdf2_sha256("zz-not-common-zz", "salt", 1000, 32);
            let hexed: String = d.iter().map(|b| format!("{b:02x}")).collect();
            format!("pbkdf2:sha256:1000$salt${hexed}")
        };
        assert_eq!(is_weak("x", &werkzeug, "erp"), Some(false));
        assert_eq!(is_weak("x", "md5abcdef", "erp"), None);
    }
}
