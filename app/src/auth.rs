//! Admin authentication: named bearer tokens.
//!
//! Tokens come from `ADMIN_TOKENS` (`name=token,name2=token2:read`) or a file with one
//! `name=token[:read]` per line. The name, never the token, is what logs and the audit log
//! record. Comparison runs over every configured token in constant time, so response timing
//! tells nothing about how close a guess was.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read and change registrations.
    Write,
    /// Only read registrations and the audit log.
    Read,
}

#[derive(Clone)]
struct Token {
    name: String,
    secret: Vec<u8>,
    scope: Scope,
}

/// The configured admin tokens.
#[derive(Clone, Default)]
pub struct AdminTokens {
    tokens: Arc<Vec<Token>>,
}

impl std::fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("AdminTokens")
            .field("names", &names)
            .finish()
    }
}

/// A token specification that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{source_name} entry {entry}: {reason}")]
pub struct TokenSpecError {
    source_name: String,
    entry: usize,
    reason: String,
}

impl AdminTokens {
    /// Parses `name=token[:read]` entries separated by commas or newlines. `source_name`
    /// (e.g. `ADMIN_TOKENS`, a file path) is named in errors; token values never are.
    pub fn parse(spec: &str, source_name: &str) -> Result<Self, TokenSpecError> {
        let mut tokens: Vec<Token> = Vec::new();
        let entries = spec
            .split([',', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty() && !e.starts_with('#'));
        for (index, entry) in entries.enumerate() {
            let error = |reason: String| TokenSpecError {
                source_name: source_name.to_owned(),
                entry: index + 1,
                reason,
            };
            let Some((name, rest)) = entry.split_once('=') else {
                return Err(error("expected name=token (or name=token:read)".into()));
            };
            let name = name.trim();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
            {
                return Err(error(format!(
                    "token name {name:?} must be letters, digits, - _ . or @"
                )));
            }
            let (secret, scope) = match rest.trim().rsplit_once(':') {
                Some((secret, "read")) => (secret, Scope::Read),
                Some((secret, "write")) => (secret, Scope::Write),
                _ => (rest.trim(), Scope::Write),
            };
            if secret.len() < MIN_TOKEN_LEN {
                return Err(error(format!(
                    "token of {name:?} is shorter than {MIN_TOKEN_LEN} characters; generate one with `openssl rand -hex 24`"
                )));
            }
            if tokens.iter().any(|t| t.name == name) {
                return Err(error(format!("token name {name:?} appears twice")));
            }
            tokens.push(Token {
                name: name.to_owned(),
                secret: secret.as_bytes().to_vec(),
                scope,
            });
        }
        Ok(Self {
            tokens: Arc::new(tokens),
        })
    }

    /// Whether no token is configured (admin routes then refuse everything).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Names of the configured tokens (for the start-up log).
    pub fn names(&self) -> Vec<&str> {
        self.tokens.iter().map(|t| t.name.as_str()).collect()
    }

    fn find(&self, presented: &[u8]) -> Option<&Token> {
        let mut found = None;
        for token in self.tokens.iter() {
            // No early exit: every token is compared whatever matched before.
            if bool::from(token.secret.as_slice().ct_eq(presented)) {
                found = Some(token);
            }
        }
        found
    }
}

/// An authenticated operator, extracted from `Authorization: Bearer <token>`.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The token's name: recorded as `created_by` and in the audit log.
    pub name: String,
    scope: Scope,
}

impl Admin {
    /// Refuses with 403 unless the token may change registrations.
    pub fn require_write(&self) -> Result<(), ApiError> {
        match self.scope {
            Scope::Write => Ok(()),
            Scope::Read => Err(ApiError::Forbidden(format!(
                "token {:?} is read-only; use a token without :read to change registrations",
                self.name
            ))),
        }
    }
}

/// Works with any state the tokens can be taken from (`AdminTokens: FromRef<S>`), so this
/// module needs nothing from the layers above it.
impl<S> FromRequestParts<S> for Admin
where
    AdminTokens: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let tokens = AdminTokens::from_ref(state);
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "missing Authorization header; send Authorization: Bearer <admin token>".into(),
                )
            })?;
        let presented = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "Authorization must be of the form: Bearer <admin token>".into(),
                )
            })?;
        let token = tokens.find(presented.as_bytes()).ok_or_else(|| {
            ApiError::Unauthorized(
                "the bearer token is not one of the configured admin tokens".into(),
            )
        })?;
        Ok(Admin {
            name: token.name.clone(),
            scope: token.scope,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_scopes_and_refuses_weak_or_duplicate_tokens() {
        let tokens = AdminTokens::parse(
            "alice=aaaaaaaaaaaaaaaa, dash=bbbbbbbbbbbbbbbb:read",
            "ADMIN_TOKENS",
        )
        .unwrap();
        assert_eq!(tokens.names(), ["alice", "dash"]);
        assert_eq!(
            tokens.find(b"bbbbbbbbbbbbbbbb").map(|t| t.scope),
            Some(Scope::Read)
        );
        assert!(tokens.find(b"aaaaaaaaaaaaaaa").is_none());

        let weak = AdminTokens::parse("bob=short", "ADMIN_TOKENS").unwrap_err();
        assert!(weak.to_string().contains("ADMIN_TOKENS entry 1"), "{weak}");
        assert!(
            !weak.to_string().contains("short\""),
            "the token itself is never echoed"
        );

        let twice =
            AdminTokens::parse("a=aaaaaaaaaaaaaaaa\na=cccccccccccccccc", "tokens.txt").unwrap_err();
        assert!(twice.to_string().contains("appears twice"), "{twice}");

        let shape = AdminTokens::parse("just-a-token-without-name", "ADMIN_TOKENS").unwrap_err();
        assert!(shape.to_string().contains("name=token"), "{shape}");
    }
}
