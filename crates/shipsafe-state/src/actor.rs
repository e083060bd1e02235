//! Who ran a command, for the audit log: the OS user, the git author of the
//! working tree, and CI variables when present.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub os_user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git_author: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub ci: BTreeMap<String, String>,
}

/// CI variables worth keeping: which system, which pipeline, who triggered it.
const CI_VARS: &[&str] = &[
    "CI",
    "GITHUB_ACTOR",
    "GITHUB_REPOSITORY",
    "GITHUB_RUN_ID",
    "GITHUB_SHA",
    "GITHUB_WORKFLOW",
    "GITLAB_USER_LOGIN",
    "CI_PIPELINE_ID",
    "CI_COMMIT_SHA",
    "BUILDKITE_BUILD_ID",
    "CIRCLE_BUILD_NUM",
    "HEROKU_APP_NAME",
    "RAILWAY_ENVIRONMENT",
];

impl Actor {
    /// Reads the actor from the process environment and `git` in `cwd`.
    pub fn detect(cwd: &Path) -> Self {
        let os_user = std::env::var("USER")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(nix_user_name)
            .unwrap_or_else(|| "unknown".into());
        let git_author = git_author(cwd);
        let ci = CI_VARS
            .iter()
            .filter_map(|k| {
                std::env::var(k)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .map(|v| ((*k).to_string(), v))
            })
            .collect();
        Self {
            os_user,
            git_author,
            ci,
        }
    }

    /// Short form for listings: `alice (Alice <a@x>) [CI]`.
    pub fn short(&self) -> String {
        let mut s = self.os_user.clone();
        if let Some(g) = &self.git_author {
            s.push_str(&format!(" ({g})"));
        }
        if !self.ci.is_empty() {
            s.push_str(" [CI]");
        }
        s
    }
}

fn nix_user_name() -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
}

fn git_author(cwd: &Path) -> Option<String> {
    let (mut name, mut email) = (
        std::env::var("GIT_AUTHOR_NAME").ok(),
        std::env::var("GIT_AUTHOR_EMAIL").ok(),
    );
    if name.is_none() || email.is_none() {
        // One git process for both (each costs ~10 ms); the last value of a
        // key wins, as `git config --get` has it.
        let (mut n, mut e) = (None, None);
        for line in git_user_config(cwd).lines() {
            match line.split_once(' ') {
                Some(("user.name", v)) if !v.trim().is_empty() => n = Some(v.trim().to_string()),
                Some(("user.email", v)) if !v.trim().is_empty() => e = Some(v.trim().to_string()),
                _ => {}
            }
        }
        name = name.or(n);
        email = email.or(e);
    }
    match (name, email) {
        (Some(n), Some(e)) => Some(format!("{n} <{e}>")),
        (Some(n), None) => Some(n),
        (None, Some(e)) => Some(format!("<{e}>")),
        (None, None) => None,
    }
}

fn git_user_config(cwd: &Path) -> String {
    Command::new("git")
        .args(["config", "--get-regexp", "^user\\.(name|email)$"])
        .current_dir(cwd)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_s_author_wins_over_the_global_one() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let git = |args: &[&str]| {
            let ok = Command::new("git")
                .args(args)
                .current_dir(dir.path())
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(ok, "git {args:?}");
        };
        git(&["init", "-q"]);
        git(&["config", "user.name", "Ann Lee"]);
        git(&["config", "user.email", "ann@example.com"]);
        let expected = match (
            std::env::var("GIT_AUTHOR_NAME").ok(),
            std::env::var("GIT_AUTHOR_EMAIL").ok(),
        ) {
            (Some(n), Some(e)) => format!("{n} <{e}>"),
            (Some(n), None) => format!("{n} <ann@example.com>"),
            (None, Some(e)) => format!("Ann Lee <{e}>"),
            (None, None) => "Ann Lee <ann@example.com>".into(),
        };
        assert_eq!(git_author(dir.path()).as_deref(), Some(expected.as_str()));
    }
}
