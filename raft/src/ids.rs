//! Validated identifiers: 1..=64 characters of `[a-z0-9-_]`, starting with a letter or digit.
//!
//! Every identifier that enters the state model goes through [`validate_id`], so a bad name is
//! rejected at the boundary with an error that says which kind of id was wrong and why.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest identifier accepted, in characters (all ASCII, so also bytes).
pub const ID_MAX_LEN: usize = 64;

/// An identifier that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("invalid {kind} id {value:?}: {reason}")]
pub struct IdError {
    /// Which kind of id (tenant, workspace, ...).
    pub kind: String,
    /// The rejected text (cut to a bounded length).
    pub value: String,
    /// What was wrong with it.
    pub reason: String,
}

/// Checks `value` against the identifier rules; `kind` names the id in the error.
pub fn validate_id(kind: &str, value: &str) -> Result<(), IdError> {
    let err = |reason: &str| IdError {
        kind: kind.to_string(),
        value: value.chars().take(ID_MAX_LEN + 8).collect(),
        reason: reason.to_string(),
    };
    if value.is_empty() {
        return Err(err("must not be empty"));
    }
    if value.len() > ID_MAX_LEN {
        return Err(err("must be at most 64 characters"));
    }
    let first = value.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(err("must start with a lowercase letter or a digit"));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(err(&format!(
            "character {bad:?} not allowed; use only a-z, 0-9, '-' and '_'"
        )));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The kind of identifier, as named in errors.
            pub const KIND: &'static str = $kind;

            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate_id($kind, &value)?;
                Ok(Self(value))
            }

            /// The identifier text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(value: &str) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

id_type!(
    /// A tenant: the unit of isolation.
    TenantId,
    "tenant"
);
id_type!(
    /// A workspace inside a tenant, bound to one Notion integration.
    WorkspaceId,
    "workspace"
);
id_type!(
    /// A Notion integration (its sealed token and request budget) inside a tenant.
    IntegrationId,
    "integration"
);
id_type!(
    /// A principal (user or agent) inside a tenant.
    PrincipalId,
    "principal"
);
id_type!(
    /// An API token's public identifier (never its secret).
    TokenId,
    "token"
);
