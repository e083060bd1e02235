//! The manifest stored next to each archive: the JSON of SPEC §3 ("JSON of
//! a backup"). Manifests in storage are the catalog: with the state folder
//! gone, `backup list` still finds every backup.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Complete,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub at: String,
    pub ok: bool,
    pub restore_seconds: f64,
    pub checks_passed: u32,
    pub checks_failed: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How the copy was restored: `environment path` (the replay an
    /// environment restore uses, owners and grants included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// What the restore compared with the archive (rows, sequences, large
    /// objects) and what it did not prove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<RestoreProof>,
}

/// A `[[checks]]` entry as it was when a backup was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedCheck {
    pub name: String,
    pub sql: String,
    pub expect: shipsafe_config::Expectation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<shipsafe_config::Duration>,
}

impl From<&shipsafe_config::CheckConfig> for RecordedCheck {
    fn from(c: &shipsafe_config::CheckConfig) -> Self {
        Self {
            name: c.name.clone(),
            sql: c.sql.clone(),
            expect: c.expect,
            timeout: c.timeout,
        }
    }
}

impl RecordedCheck {
    /// The check to run (it held in the backup's environment).
    pub fn to_check(&self) -> shipsafe_config::CheckConfig {
        shipsafe_config::CheckConfig {
            name: self.name.clone(),
            sql: self.sql.clone(),
            expect: self.expect,
            envs: Vec::new(),
            timeout: self.timeout,
        }
    }
}

/// An audit entry (sequence number and hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub id: String,
    pub env: String,
    pub database: String,
    /// manual, scheduled, pre-deploy, pre-rollback, pre-restore, pre-wipe,
    /// pre-import, pre-clone
    pub reason: String,
    pub status: Status,
    pub created_at: String,
    pub finished_at: String,
    /// Bytes of the uncompressed `pg_dump -Fc` archive.
    pub raw_bytes: u64,
    /// Bytes of the stored, zstd-compressed archive.
    pub size_bytes: u64,
    /// `blake3:<hex>` of the stored archive.
    pub checksum: String,
    /// Storage URL of the archive.
    pub location: String,
    pub server_version: String,
    pub pg_dump_version: String,
    /// Extensions of the source database (`name version`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
    /// Roles the dumped objects reference (owners, grants, policies): a
    /// scratch cluster creates them before restoring.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Rows written to user tables before the dump began (sum of
    /// `pg_stat_user_tables` insert/update/delete counters), so a rollback
    /// can say how much a restore of this backup would discard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes_at_backup: Option<i64>,
    /// The audit log's head when the backup was taken: a copy outside
    /// state.db that `log verify` compares with the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_head: Option<AuditHead>,
    /// Schemas left out of the dump (`[backups] exclude_schemas`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_schemas: Vec<String>,
    /// What the archive holds: rows per table, sequence values, large
    /// objects (read from pg_dump's output as it streamed by).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents: Option<crate::archive::ArchiveContents>,
    /// Which database was backed up (the server's system identifier, the
    /// database's oid and name): `status` shows an environment's backups
    /// only while its URL still names that database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_identity: Option<String>,
    /// The database's own properties a dump does not carry (settings,
    /// comment, privileges), with hashes instead of values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub database_level: Vec<crate::dblevel::DatabaseProperty>,
    /// The `[[checks]]` configured for the environment when the backup was
    /// taken: what verifying or restoring this backup proves. `None` in
    /// manifests written before they were recorded (the checks configured
    /// now are used for those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<RecordedCheck>>,
    #[serde(default)]
    pub verifications: Vec<Verification>,
    /// Why a failed backup failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Manifest {
    pub fn is_complete(&self) -> bool {
        self.status == Status::Complete
    }

    /// Proven restorable: the latest verification succeeded.
    pub fn is_verified(&self) -> bool {
        self.verifications.last().is_some_and(|v| v.ok)
    }

    pub fn last_good_verification(&self) -> Option<&Verification> {
        self.verifications.iter().rev().find(|v| v.ok)
    }

    pub fn created(&self) -> Option<jiff::Timestamp> {
        self.created_at.parse().ok()
    }

    /// Server major version the dump came from.
    pub fn server_major(&self) -> Option<u32> {
        shipsafe_pg::binaries::major_of(&self.server_version)
    }
}

/// A new backup id: `<env>-<UTC time>-<4 hex>`, sortable by time.
pub fn new_id(env: &str, at: jiff::Timestamp) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let salt = blake3::hash(format!("{}{nanos}", std::process::id()).as_bytes()).to_hex();
    format!("{env}-{}-{}", at.strftime("%Y%m%dT%H%M%SZ"), &salt[..4])
}

/// The environment of a backup id [`new_id`] made (`ENV-YYYYMMDDTHHMMSSZ-xxxx`),
/// or `None` when `id` is not one.
pub fn env_of_id(id: &str) -> Option<&str> {
    let (rest, salt) = id.rsplit_once('-')?;
    let (env, at) = rest.rsplit_once('-')?;
    let stamp = at.as_bytes();
    let is_stamp = stamp.len() == 16
        && stamp[8] == b'T'
        && stamp[15] == b'Z'
        && stamp
            .iter()
            .enumerate()
            .all(|(i, b)| i == 8 || i == 15 || b.is_ascii_digit());
    let is_salt = salt.len() == 4 && salt.bytes().all(|b| b.is_ascii_hexdigit());
    (is_stamp && is_salt && !env.is_empty()).then_some(env)
}

/// What a committed restore proved about its own result, beyond `[[checks]]`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RestoreProof {
    /// Tables whose restored rows were counted against the archive.
    pub tables: u64,
    pub rows: u64,
    /// Sequences whose restored values equal the archive's.
    pub sequences: u64,
    pub large_objects: u64,
    /// What this restore did not establish.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_proven: Vec<String>,
    /// What it did differently from the backup's source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}
