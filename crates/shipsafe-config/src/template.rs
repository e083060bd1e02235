//! `${VAR}` references in config values.
//!
//! Secrets never live in `shipsafe.toml`: values name environment variables and
//! are resolved only when the value is used ("late"), so a missing variable for
//! an environment you are not touching does not stop other commands.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A config string that may contain `${NAME}` references.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    raw: String,
}

/// A `${NAME}` reference whose variable is not set (or is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingVariable {
    pub name: String,
}

/// Where variable values come from. The process environment in production,
/// a map in tests.
pub trait VarSource: Send + Sync {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl VarSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<S: std::hash::BuildHasher + Send + Sync> VarSource
    for std::collections::HashMap<String, String, S>
{
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl<const N: usize> VarSource for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_string())
    }
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part<'a> {
    Literal(&'a str),
    Var(&'a str),
}

impl Template {
    /// Parses and validates the `${...}` syntax.
    pub fn new(raw: impl Into<String>) -> Result<Self, String> {
        let raw = raw.into();
        parts(&raw)?;
        Ok(Self { raw })
    }

    /// The text as written in the file (with `${...}` unexpanded). Never secret.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    pub fn parts(&self) -> Vec<Part<'_>> {
        // Validated in `new`, so this cannot fail.
        parts(&self.raw).unwrap_or_default()
    }

    /// Names of the variables referenced, in order of appearance.
    pub fn variables(&self) -> Vec<&str> {
        self.parts()
            .into_iter()
            .filter_map(|p| match p {
                Part::Var(v) => Some(v),
                Part::Literal(_) => None,
            })
            .collect()
    }

    pub fn has_variables(&self) -> bool {
        !self.variables().is_empty()
    }

    /// Expands every reference. An unset or empty variable is an error: an
    /// empty database URL or password is never what the user meant.
    pub fn resolve(&self, vars: &dyn VarSource) -> Result<String, MissingVariable> {
        let mut out = String::with_capacity(self.raw.len());
        for part in self.parts() {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Var(name) => match vars.var(name) {
                    Some(v) if !v.is_empty() => out.push_str(&v),
                    _ => {
                        return Err(MissingVariable {
                            name: name.to_string(),
                        });
                    }
                },
            }
        }
        Ok(out)
    }
}

fn parts(raw: &str) -> Result<Vec<Part<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            out.push(Part::Literal(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unterminated `${{` in {raw:?}: write `${{NAME}}`"));
        };
        let name = &after[..end];
        if !is_var_name(name) {
            return Err(format!(
                "`${{{name}}}` is not a valid variable reference: names are letters, digits and `_`, not starting with a digit"
            ));
        }
        out.push(Part::Var(name));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Part::Literal(rest));
    }
    Ok(out)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The raw text has no secret unless a user wrote one literally; mask
        // URL passwords anyway so a Debug print never leaks one.
        write!(f, "Template({:?})", crate::mask::mask_secrets(&self.raw))
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::mask::mask_secrets(&self.raw))
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Template::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_references_inside_text() {
        let t = Template::new("postgres://app:${PW}@${HOST}:5432/app").unwrap();
        let vars = [("PW", "s3cret"), ("HOST", "db")];
        assert_eq!(
            t.resolve(&vars).unwrap(),
            "postgres://app:s3cret@db:5432/app"
        );
        assert_eq!(t.variables(), vec!["PW", "HOST"]);
    }

    #[test]
    fn missing_and_empty_variables_are_errors() {
        let t = Template::new("${A}${B}").unwrap();
        let vars = [("A", "x"), ("B", "")];
        assert_eq!(t.resolve(&vars).unwrap_err().name, "B");
        let none: [(&str, &str); 0] = [];
        assert_eq!(t.resolve(&none).unwrap_err().name, "A");
    }

    #[test]
    fn bad_syntax_is_rejected() {
        assert!(Template::new("${UNCLOSED").is_err());
        assert!(Template::new("${1BAD}").is_err());
        assert!(Template::new("${}").is_err());
        assert!(Template::new("plain $HOME text").is_ok());
    }
}
