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
    let name = std::env::var("GIT_AUTHOR_NAME")
        .ok()
        .or_else(|| git_config(cwd, "user.name"));
    let email = std::env::var("GIT_AUTHOR_EMAIL")
        .ok()
        .or_else(|| git_config(cwd, "user.email"));
    match (name, email) {
        (Some(n), Some(e)) => Some(format!("{n} <{e}>")),
        (Some(n), None) => Some(n),
        (None, Some(e)) => Some(format!("<{e}>")),
        (None, None) => None,
    }
}

fn git_config(cwd: &Path, key: &str) -> Option<String> {
    let out = Command::new("git")
        .args(["config", "--get", key])
        .current_dir(cwd)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}
