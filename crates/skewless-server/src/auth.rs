//! The admin token: loaded or generated at start-up, checked in constant time.

use std::io::Write;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::{Role, ServerConfig, ServerError};

/// File name of the generated token inside the data directory.
pub const TOKEN_FILE: &str = "admin-token";

/// The configured token, else the one stored in `<data>/admin-token`, else a
/// new random one written there with mode 0600.
pub fn load_or_create_token(config: &ServerConfig) -> Result<String, ServerError> {
    if let Some(t) = config
        .admin_token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        return Ok(t.to_owned());
    }
    let path = config.data.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => {
            eprintln!("skewless: admin token is in {}", path.display());
            return Ok(t.trim().to_owned());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ServerError::Startup(format!(
                "cannot read admin token {}: {e}",
                path.display()
            )))
        }
    }
    let token = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    let tmp = config.data.join(format!("{TOKEN_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(token.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        ServerError::Startup(format!("cannot write admin token {}: {e}", path.display()))
    })?;
    eprintln!(
        "skewless: generated an admin token in {} (mode 0600); the CLI reads it from there",
        path.display()
    );
    Ok(token)
}

/// Whether `given` is the admin token, compared in constant time over
/// fixed-length digests so neither content nor length leaks.
pub fn token_matches(given: &str, expected: &str) -> bool {
    let a = blake3::hash(given.as_bytes());
    let b = blake3::hash(expected.as_bytes());
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Whether a client at `peer` may use the admin API: tokens travel in clear
/// over plain HTTP, so only loopback clients unless the operator says a TLS
/// proxy is in front.
pub fn admin_reachable(peer: Option<std::net::IpAddr>, allow_remote: bool) -> bool {
    allow_remote || peer.is_some_and(|ip| ip.is_loopback() || ip.to_canonical().is_loopback())
}

/// Who made an admin call: the name of its token.
#[derive(Debug, Clone)]
pub struct Actor {
    /// Token name, recorded in history.
    pub name: Arc<str>,
    /// What it may do.
    pub role: Role,
}

/// One accepted admin token.
#[derive(Debug, Clone)]
pub struct Token {
    /// Its name.
    pub name: Arc<str>,
    /// The secret.
    pub secret: String,
    /// Its role.
    pub role: Role,
}

/// The accepted admin tokens and who may present them.
#[derive(Debug)]
pub struct Tokens {
    tokens: Vec<Token>,
    allow_remote: bool,
}

impl Tokens {
    /// The admin token (configured, stored or generated) and the named
    /// tokens of the configuration.
    pub fn from_config(config: &ServerConfig) -> Result<Self, ServerError> {
        let mut tokens = vec![Token {
            name: "admin".into(),
            secret: load_or_create_token(config)?,
            role: Role::Admin,
        }];
        for t in &config.tokens {
            tokens.push(Token {
                name: t.name.as_str().into(),
                secret: t.token.trim().to_owned(),
                role: t.role,
            });
        }
        Ok(Tokens {
            tokens,
            allow_remote: config.admin_allow_remote,
        })
    }
}

/// Refuses admin requests without a known bearer token, and mutating ones
/// with a read-only token; passes the [`Actor`] on to the handler.
pub async fn require_admin(
    State(tokens): State<Arc<Tokens>>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if !admin_reachable(peer, tokens.allow_remote) {
        return ServerError::Forbidden(
            "the admin API answers loopback clients only; serve HTTPS (--tls-cert/--tls-key) or put a TLS-terminating proxy in front, and set admin_allow_remote = true".into(),
        )
        .into_response();
    }
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(given) = given else {
        return ServerError::Unauthorized.into_response();
    };
    // Compare against every token so timing says nothing about which matched.
    let mut found: Option<&Token> = None;
    for t in &tokens.tokens {
        if token_matches(given, &t.secret) {
            found = Some(t);
        }
    }
    let Some(token) = found else {
        return ServerError::Unauthorized.into_response();
    };
    let reading = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if token.role == Role::Read && !reading {
        return ServerError::Forbidden(format!("token {} is read-only", token.name))
            .into_response();
    }
    let actor = Actor {
        name: token.name.clone(),
        role: token.role,
    };
    req.extensions_mut().insert(actor);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_is_loopback_only_by_default() {
        let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let lo6: std::net::IpAddr = "::1".parse().unwrap();
        let mapped: std::net::IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let remote: std::net::IpAddr = "203.0.113.9".parse().unwrap();
        assert!(admin_reachable(Some(lo), false));
        assert!(admin_reachable(Some(lo6), false));
        assert!(admin_reachable(Some(mapped), false));
        assert!(!admin_reachable(Some(remote), false));
        assert!(!admin_reachable(None, false));
        assert!(admin_reachable(Some(remote), true));
    }

    #[test]
    fn compares_tokens() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("", "abc"));
        assert!(!token_matches("abcd", "abc"));
    }
}
